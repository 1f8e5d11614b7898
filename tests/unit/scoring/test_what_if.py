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
from chalicelib.scoring.reasons import _GROUPS, reason_effects, what_if
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


class _CountingBtyd:
    """Counts the rows the buy-till-you-die step transforms, and transforms them as it would."""

    def __init__(self, step: BtydFeatures) -> None:
        self.step, self.rows = step, 0
        self.INPUTS = step.INPUTS

    def transform(self, X: np.ndarray) -> np.ndarray:
        self.rows += X.shape[0]
        return self.step.transform(X)


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


def test_the_buy_till_you_die_step_runs_once_for_the_groups_that_do_not_read_its_inputs(model, monkeypatch):
    # GIVEN the committed pipeline, its buy-till-you-die step counted, and more users than a prediction block
    monkeypatch.setattr(artifact, "PREDICT_ROWS", 700)
    step = model.estimator.steps[0][1]
    counting = _CountingBtyd(step)
    monkeypatch.setattr(artifact, "_btyd_lead", lambda estimator: (counting, estimator[1:]))
    features = _users(model, 2000, seed=13)
    ask = model.what_if(features)
    reads = [c for c, cols in _GROUPS.items() if np.isin(cols, step.INPUTS).any()]
    others = [c for c in _GROUPS if c not in reads]
    assert reads and len(others) >= 3
    # WHEN every group that does not read them is asked for all users
    for name in others:
        ask(np.arange(2000), _GROUPS[name], model.reference[_GROUPS[name]])
    # THEN the step transformed each user once, for all of those groups together
    assert counting.rows == 2000


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
