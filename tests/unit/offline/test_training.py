"""Labels come from the horizon after the cutoff; features from events at or before it."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.errors import InputError
from chalicelib.scoring.events import TYPE_CODE, EventBatch
from churnguard_offline.training import labelled_set

DAY = 86400.0
CUTOFF = 1_780_000_000.0


def _events(rows: list[tuple[str, float]]) -> EventBatch:
    users = list(dict.fromkeys(u for u, _ in rows))
    return EventBatch(
        user_ids=users,
        user_index=np.array([users.index(u) for u, _ in rows], dtype=np.int32),
        time=np.array([t for _, t in rows]),
        type_code=np.full(len(rows), TYPE_CODE["login"], dtype=np.int8),
        value=np.full(len(rows), np.nan),
    )


def test_churn_label_is_no_event_in_the_horizon_after_the_cutoff():
    data = labelled_set(
        _events(
            [
                ("stays", CUTOFF - 5 * DAY),
                ("stays", CUTOFF + 30 * DAY),  # last second of the horizon still counts
                ("churns", CUTOFF),  # an event at the cutoff is history, not the future
                ("churns", CUTOFF + 31 * DAY),  # after the horizon: too late
                ("newcomer", CUTOFF + 2 * DAY),  # unknown at the cutoff: not in the set
                ("gone", CUTOFF - 800 * DAY),  # outside the lookback window (730 days: what the schedule still scores)
                ("late", CUTOFF + 40 * DAY),
            ]
        ),
        CUTOFF,
        30,
    )
    assert dict(zip(data.user_ids, data.labels)) == {"stays": 0, "churns": 1}


def test_horizon_past_the_end_of_the_data_is_refused():
    with pytest.raises(InputError, match="horizon"):
        labelled_set(_events([("a", CUTOFF - DAY), ("a", CUTOFF + 5 * DAY)]), CUTOFF, 30)


def test_cutoff_before_any_history_is_refused():
    with pytest.raises(InputError, match="no events at or before the cutoff"):
        labelled_set(_events([("a", CUTOFF + DAY), ("a", CUTOFF + 60 * DAY)]), CUTOFF, 30)


def test_a_window_whose_last_days_are_quiet_is_accepted_when_the_export_says_where_it_ends():
    # GIVEN a sparse log whose last event is 10 days before the horizon's end, exported at the horizon's end
    events = _events([("a", CUTOFF - DAY), ("b", CUTOFF - 2 * DAY), ("a", CUTOFF + 20 * DAY)])
    # WHEN no data end is given THEN the window is refused, with the way out named
    with pytest.raises(InputError, match="--data-end"):
        labelled_set(events, CUTOFF, 30)
    # WHEN the export's end is given THEN the quiet days count as data: b churned, a stayed
    data = labelled_set(events, CUTOFF, 30, data_end=CUTOFF + 30 * DAY)
    assert dict(zip(data.user_ids, data.labels)) == {"a": 0, "b": 1}
    # AND a horizon past the export's end is still refused, as is an event after it
    with pytest.raises(InputError, match="after the data's end"):
        labelled_set(events, CUTOFF, 30, data_end=CUTOFF + 29 * DAY)
    with pytest.raises(InputError, match="is after --data-end"):
        labelled_set(events, CUTOFF, 10, data_end=CUTOFF + 15 * DAY)


def test_evaluate_judges_every_user_the_schedule_scores_unless_asked_for_the_active_only():
    from chalicelib.scoring.artifact import MODEL_CACHE
    from churnguard_offline.generate import generate_events
    from churnguard_offline.training import evaluate, population_lookback

    # GIVEN the committed model and a year of history with users silent for longer than its 180-day lookback
    model = MODEL_CACHE.get()
    as_of = CUTOFF + 30 * DAY
    events = generate_events(
        600, 365, 3, __import__("datetime").datetime.fromtimestamp(as_of, __import__("datetime").UTC)
    )
    # WHEN it is evaluated over each population
    every = evaluate(model, events, CUTOFF, 30)
    active = evaluate(model, events, CUTOFF, 30, population="active")
    # THEN the default is everyone the schedule still knows (730 days), which holds more users than the active
    assert every["population"] == {"name": "all", "seen_within_days": 730.0}
    assert active["population"] == {"name": "active", "seen_within_days": 180.0}
    assert every["n"] > active["n"] > 0
    with pytest.raises(InputError, match="population"):
        population_lookback(model, "everyone")
    # AND beside the baselines fitted one horizon earlier, buy-till-you-die fitted at the cutoff on the same users
    for report in (every, active):
        assert set(report["baselines"]) == {"recency", "rfm", "bg_nbd", "pareto_nbd"}
        assert set(report["baselines_at_cutoff"]) == {"bg_nbd", "pareto_nbd", "pareto_nbd_expected"}
    assert every["baselines_at_cutoff"] != active["baselines_at_cutoff"]


def test_evaluate_fits_buy_till_you_die_at_the_cutoff_even_with_no_history_before_it_to_fit_baselines_on():
    from datetime import UTC, datetime

    from chalicelib.scoring.artifact import MODEL_CACHE
    from churnguard_offline.generate import generate_events
    from churnguard_offline.training import evaluate

    # GIVEN 40 days of history and a cutoff 10 days into it: nothing lies one 30-day horizon before the cutoff
    end = CUTOFF + 30 * DAY
    events = generate_events(600, 40, 5, datetime.fromtimestamp(end, UTC))
    # WHEN the committed model is evaluated there
    report = evaluate(MODEL_CACHE.get(), events, CUTOFF, 30)
    # THEN the baselines that need an earlier origin are left out, saying why, and the at-cutoff ones are there
    assert report["baselines"] == {} and "no history before" in report["baselines_note"]
    assert set(report["baselines_at_cutoff"]) == {"bg_nbd", "pareto_nbd", "pareto_nbd_expected"}
    assert 0.5 < report["baselines_at_cutoff"]["pareto_nbd"]["auc"] <= 1


@pytest.mark.slow  # a whole training: left to make test
def test_a_training_fits_pareto_nbd_once_to_choose_once_to_refit_and_once_for_the_baseline(tmp_path, pareto_fits):
    # GIVEN a log with three origins, and every Pareto/NBD fit counted
    from datetime import UTC, datetime

    from chalicelib.scoring.artifact import load_model
    from churnguard_offline.generate import generate_events
    from churnguard_offline.training import train

    end = datetime(2026, 6, 1, tzinfo=UTC)
    events = generate_events(400, 150, 4, end)
    # WHEN it trains: three candidates, two calibrations of three folds each, a refit
    manifest = train(events, cutoff=end.timestamp() - 30 * DAY, horizon_days=30, out_dir=tmp_path, max_origins=3)
    # THEN Pareto/NBD was fitted three times, not in every one of those pipelines
    assert len(pareto_fits) == 3, pareto_fits
    assert manifest["training_data"]["rows"] in pareto_fits  # the refit: all rows, as the deployed model's own fit
    # AND the deployed model's buy-till-you-die step holds that last fit, in every calibration fold alike
    model = load_model(tmp_path).estimator
    folds = [c.estimator for c in getattr(model, "calibrated_classifiers_", [])] or [model]
    pareto = [f.named_steps["btyd"].paretonbd_ if hasattr(f, "named_steps") else f.btyd_ for f in folds]
    assert len({tuple(p.params_.values()) for p in pareto}) == 1


def test_permutation_importance_of_a_feature_the_model_never_varies_is_zero_on_a_large_validation_set():
    from sklearn.linear_model import LogisticRegression

    from chalicelib.scoring.features import FEATURE_NAMES
    from churnguard_offline.training import IMPORTANCE_ROWS, _importance

    # GIVEN a validation set larger than the rows importance shuffles, whose labels follow the first feature alone,
    # and whose other features are constant
    rng = np.random.default_rng(5)
    n = 3 * IMPORTANCE_ROWS
    X = np.zeros((n, len(FEATURE_NAMES)))
    X[:, 0] = rng.normal(size=n)
    y = (X[:, 0] + rng.normal(scale=1.5, size=n) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    # WHEN importance is measured
    importance = _importance(model, X, y, seed=1)
    # THEN the first feature matters and every constant one counts exactly zero: shuffled and unshuffled
    # scores come from the same rows
    assert importance[FEATURE_NAMES[0]] > 0.05
    assert all(importance[name] == 0.0 for name in FEATURE_NAMES[1:])


def test_a_buy_till_you_die_fit_with_no_finite_answer_is_left_out_of_evaluate_saying_which(monkeypatch):
    from datetime import UTC, datetime

    from chalicelib.scoring.artifact import MODEL_CACHE
    from churnguard_offline import baselines
    from churnguard_offline.generate import generate_events
    from churnguard_offline.training import evaluate

    # GIVEN a Pareto/NBD fit at the cutoff whose P(no event) is not a number for one user
    fitted = baselines.btyd_scores

    def one_nan(inputs, horizon_days):
        scores = fitted(inputs, horizon_days)
        scores["pareto_nbd"][0] = np.nan
        return scores

    monkeypatch.setattr(baselines, "btyd_scores", one_nan)
    events = generate_events(300, 90, 6, datetime.fromtimestamp(CUTOFF + 30 * DAY, UTC))
    # WHEN the committed model is evaluated
    report = evaluate(MODEL_CACHE.get(), events, CUTOFF, 30)
    # THEN the others are reported, that one is left out, and the report says so instead of failing
    assert set(report["baselines_at_cutoff"]) == {"bg_nbd", "pareto_nbd_expected"}
    assert report["baselines_at_cutoff_note"] == "no finite fit at the cutoff for pareto_nbd"
