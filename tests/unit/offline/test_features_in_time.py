"""A model trained when its users were young still ranks them when they are older: features that travel in time."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from chalicelib.scoring.artifact import load_model
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.state import build_state
from churnguard_offline.generate import generate_events
from churnguard_offline.training import evaluate, labelled_set, train

END = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 365
HORIZON = 30.0


def _at(day: float) -> float:
    return END.timestamp() - (DAYS - day) * SECONDS_PER_DAY


def test_own_rhythm_features_read_the_same_at_any_age():
    # GIVEN two users with the same rhythm (an event every 4 days, now silent for 12), one of 40 days, one of 400
    as_of = _at(DAYS)
    from chalicelib.scoring.events import TYPE_CODE, EventBatch

    times, users = [], []
    for u, tenure in enumerate((40, 400)):
        t = np.arange(as_of - tenure * SECONDS_PER_DAY, as_of - 12 * SECONDS_PER_DAY + 1, 4 * SECONDS_PER_DAY)
        times.append(t)
        users.append(np.full(t.size, u, dtype=np.int32))
    time = np.concatenate(times)
    batch = EventBatch(
        ["young", "old"],
        np.concatenate(users),
        time,
        np.full(time.size, TYPE_CODE["login"], np.int8),
        np.full(time.size, np.nan),
    )
    f = compute_features(build_state(batch).values, as_of)
    names = ("recency_over_gap", "events_per_month", "tenure_days", "log_events_total")
    col = {n: f[:, FEATURE_NAMES.index(n)] for n in names}
    # THEN their silence measured in their own gaps and their monthly rate agree; their tenure does not
    assert col["recency_over_gap"] == pytest.approx([3.0, 3.0], rel=1e-6)
    assert col["events_per_month"][0] == pytest.approx(col["events_per_month"][1], rel=0.25)
    assert col["tenure_days"][1] > 9 * col["tenure_days"][0]
    assert np.expm1(col["log_events_total"][1]) > 10 * np.expm1(col["log_events_total"][0])


@pytest.mark.slow  # trains on a generated year
def test_a_model_trained_on_short_tenures_beats_buy_till_you_die_on_long_ones(tmp_path):
    # GIVEN a year of behaviour, and a model trained at day 120 on the first 150 days only
    events = generate_events(8000, DAYS, 5, END)
    cutoff = _at(120)
    seen = events.select(events.time <= cutoff + HORIZON * SECONDS_PER_DAY)
    train(
        seen,
        cutoff=cutoff,
        horizon_days=HORIZON,
        out_dir=tmp_path,
        max_origins=2,
        data_end=cutoff + HORIZON * SECONDS_PER_DAY,
    )
    late = _at(DAYS - HORIZON)
    # (the premise: users scored at day 335 are older than any the model learned from)
    young = labelled_set(seen, cutoff, HORIZON).features[:, FEATURE_NAMES.index("tenure_days")]
    old = labelled_set(events, late, HORIZON).features[:, FEATURE_NAMES.index("tenure_days")]
    assert np.median(old) > young.max() + 60
    # WHEN it scores the users at day 335, against baselines fitted a horizon before that (nearer in time than it)
    result = evaluate(load_model(tmp_path), events, late, HORIZON)
    # THEN it ranks them better than BG/NBD and Pareto/NBD
    best = max(result["baselines"][name]["auc"] for name in ("bg_nbd", "pareto_nbd"))
    assert result["auc"] > best, (result["auc"], result["baselines"])
