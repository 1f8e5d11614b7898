"""ChurnModel.what_if gives the probabilities of users with some features replaced, as predict_proba would.

Reason codes ask it once a reason group; for the groups that the buy-till-you-die step does not read, that
step's output is reused instead of computed again, and that must change no probability.
"""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.scoring import artifact
from chalicelib.scoring.artifact import ChurnModel, load_model
from chalicelib.scoring.btyd import BtydFeatures
from chalicelib.scoring.features import FEATURE_NAMES
from chalicelib.scoring.reasons import _GROUPS, reason_effects, top_reasons, what_if
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def model() -> ChurnModel:
    return load_model(ROOT / "model_artifacts")


def _users(model: ChurnModel, n: int, seed: int = 11) -> np.ndarray:
    """The typical user, spread out in tenure, silence, events, spend and complaints."""
    rng = np.random.default_rng(seed)
    rows = np.tile(model.reference, (n, 1))
    tenure = rng.uniform(1.0, 730.0, n)
    rows[:, FEATURE_NAMES.index("tenure_days")] = tenure
    rows[:, FEATURE_NAMES.index("recency_days")] = tenure * rng.uniform(0, 1, n)
    rows[:, FEATURE_NAMES.index("log_events_total")] = np.log1p(rng.integers(1, 300, n))
    rows[:, FEATURE_NAMES.index("log_net_spend")] = np.log1p(rng.exponential(80.0, n))
    rows[:, FEATURE_NAMES.index("complaints_recent")] = rng.poisson(0.3, n)
    return rows


def _count_transforms(step: BtydFeatures, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the rows `step` transforms from now on (it transforms them as before); return the running list."""
    seen: list[int] = []
    transform = step.transform

    def counted(X: np.ndarray) -> np.ndarray:
        seen.append(X.shape[0])
        return transform(X)

    monkeypatch.setattr(step, "transform", counted)
    return seen


def test_every_group_replaced_gives_the_probabilities_predict_proba_gives(model):
    # GIVEN users of every kind, and each reason group's columns set to the typical user's values
    features = _users(model, 3000)
    ask = model.what_if(features)
    rows = np.arange(0, 3000, 3)
    for name, cols in _GROUPS.items():
        # WHEN the model's own what-if and a plain re-prediction of the changed rows are asked
        block = features[rows]
        block[:, cols] = model.reference[cols]
        # THEN they give the same numbers, whether the group is one the buy-till-you-die step reads or not
        assert np.array_equal(ask(rows, cols, model.reference[cols]), model.predict_proba(block)), name
    # AND the users themselves were not changed
    assert np.array_equal(features, _users(model, 3000))


def test_reason_effects_are_the_same_with_the_models_what_if_as_with_plain_re_predictions(model):
    features = _users(model, 2000, seed=12)
    p = model.predict_proba(features)
    own = reason_effects(features, p, model.reference, model.what_if(features))
    plain = reason_effects(features, p, model.reference, what_if(features, model.predict_proba))
    assert np.abs(own).max() > 0.05
    assert np.array_equal(own, plain)


def _groups_by_what_they_read() -> tuple[list[str], list[str]]:
    reads = [name for name, cols in _GROUPS.items() if np.isin(cols, BtydFeatures.INPUTS).any()]
    return reads, [name for name in _GROUPS if name not in reads]


def test_the_buy_till_you_die_step_runs_once_for_the_groups_that_do_not_read_its_inputs(model, monkeypatch):
    # GIVEN the committed pipeline, its buy-till-you-die step counted, and more users than a prediction block
    monkeypatch.setattr(artifact, "PREDICT_ROWS", 700)
    seen = _count_transforms(model.estimator.steps[0][1], monkeypatch)
    features = _users(model, 2000, seed=13)
    ask = model.what_if(features)
    reads, others = _groups_by_what_they_read()
    assert reads and len(others) >= 3
    # WHEN every group that does not read them is asked for all users
    for name in others:
        ask(np.arange(2000), _GROUPS[name], model.reference[_GROUPS[name]])
    # THEN the step transformed each user once, for all of those groups together, in blocks
    assert seen == [700, 700, 600]
    # AND a group that reads them is predicted whole: the step runs on the rows asked
    ask(np.arange(50), _GROUPS[reads[0]], model.reference[_GROUPS[reads[0]]])
    assert seen[3:] == [50]


def test_a_scaled_linear_model_after_the_buy_till_you_die_step_takes_the_same_shortcut(model, monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from chalicelib.scoring.btyd import BtydFit

    # GIVEN a three-step pipeline as `train` writes its logistic regression, on the committed model's BTYD fits
    lead = model.estimator.steps[0][1]
    features = _users(model, 1500, seed=14)
    labels = (model.predict_proba(features) > 0.5).astype(int)
    btyd = BtydFeatures(horizon_days=lead.horizon_days, fitted=BtydFit(lead.bgnbd_, lead.paretonbd_))
    pipeline = Pipeline([("btyd", btyd), ("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=2000))])
    linear = ChurnModel(pipeline.fit(features, labels), {})
    seen = _count_transforms(btyd, monkeypatch)
    ask = linear.what_if(features)
    rows = np.arange(1, 1500, 2)
    _, others = _groups_by_what_they_read()
    for name in others:
        # WHEN a group it does not read is asked
        got = ask(rows, _GROUPS[name], model.reference[_GROUPS[name]])
        block = features[rows]
        block[:, _GROUPS[name]] = model.reference[_GROUPS[name]]
        # THEN the answer is the whole pipeline's, to a rounding unit (BLAS rounds by the size of the matrix)
        assert np.allclose(got, pipeline.predict_proba(block)[:, 1], rtol=0, atol=1e-15), name
    # AND the step ran once for the asking (the whole pipeline's own calls come on top, one a group)
    assert seen.count(1500) == 1 and len(seen) == 1 + len(others)


def test_the_scorers_reasons_are_those_of_its_at_risk_users_predicted_whole(model, monkeypatch):
    from chalicelib.scoring import scorer
    from chalicelib.scoring.state import StateBatch, empty_rows

    # GIVEN users of every kind, some of them at risk, handed to the scorer as their features
    features = _users(model, 1200, seed=15)
    p = model.predict_proba(features)
    at_risk = np.flatnonzero(p >= model.risk_thresholds["medium"])
    assert 50 < at_risk.size < 1150
    monkeypatch.setattr(scorer, "compute_features", lambda values, as_of: features.copy())
    state = StateBatch([f"u{i}" for i in range(1200)], empty_rows(1200))
    # WHEN the scorer scores them
    scores = scorer.Scorer(model).score(state, 1_790_000_000.0)
    # THEN each at-risk user's reasons are those of the at-risk users' effects, re-predicted whole
    risky = features[at_risk]
    expected = top_reasons(reason_effects(risky, p[at_risk], model.reference, what_if(risky, model.predict_proba)))
    assert [scores.reasons[i] for i in at_risk] == expected
    assert sum(map(bool, expected)) > 50


def test_a_model_without_a_leading_buy_till_you_die_step_is_asked_whole_rows():
    # GIVEN a model whose estimator is not a pipeline led by the buy-till-you-die step
    class Linear:
        def predict_proba(self, X):
            p = 1 / (1 + np.exp(-X.sum(axis=1) / 100.0))
            return np.column_stack([1 - p, p])

    model = ChurnModel(Linear(), {})
    features = np.arange(4.0 * len(FEATURE_NAMES)).reshape(4, -1)
    cols = np.array([0, 1])
    # WHEN two users are asked with two columns set to zero
    got = model.what_if(features)(np.array([1, 3]), cols, np.zeros(2))
    # THEN the answer is the model's for those rows so changed
    block = features[[1, 3]].copy()
    block[:, cols] = 0.0
    assert np.array_equal(got, model.predict_proba(block))
