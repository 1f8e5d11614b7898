"""Behaviour state: the same events give the same features however they were split or ordered."""

from __future__ import annotations

import numpy as np

from chalicelib.scoring.events import TYPE_CODE, EventBatch
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.state import StateBatch, build_state, merge_states
from tests.conftest import make_events


def _features(state: StateBatch, user_ids: list[str], as_of: float) -> np.ndarray:
    return compute_features(state.subset(user_ids).values, as_of)


def _split(events: EventBatch, parts: int, seed: int) -> list[EventBatch]:
    rng = np.random.default_rng(seed)
    which = rng.integers(0, parts, len(events))
    return [events.select(which == p) for p in range(parts)]


def test_features_are_the_same_for_one_file_many_files_and_shuffled_files(as_of):
    # GIVEN one file of events and the same events split into 40 delta files
    events = make_events(n_users=300, n_events=20_000, seed=1, end=as_of)
    whole = build_state(events)
    parts = _split(events, 40, seed=2)

    # WHEN the deltas are merged in file order and in a shuffled order
    in_order = StateBatch(user_ids=[], values=whole.values[:0])
    for part in parts:
        in_order = merge_states(in_order, build_state(part))
    shuffled = StateBatch(user_ids=[], values=whole.values[:0])
    for i in np.random.default_rng(3).permutation(len(parts)):
        shuffled = merge_states(shuffled, build_state(parts[i]))

    # THEN every feature agrees with the single-file state, as of several dates
    for days_later in (0.0, 3.5, 45.0):
        t = as_of.timestamp() + days_later * 86400
        expected = _features(whole, whole.user_ids, t)
        np.testing.assert_allclose(_features(in_order, whole.user_ids, t), expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(_features(shuffled, whole.user_ids, t), expected, rtol=1e-9, atol=1e-9)


def test_state_blob_round_trips_exactly(as_of):
    state = build_state(make_events(n_users=5, n_events=100, seed=4, end=as_of))
    again = StateBatch.from_blobs(state.user_ids, [state.blob(i) for i in range(len(state))])
    np.testing.assert_array_equal(again.values, state.values)


def test_purchases_only_log_gives_zero_for_missing_signals(as_of):
    # GIVEN a user with purchases only
    t = as_of.timestamp()
    events = EventBatch(
        user_ids=["buyer"],
        user_index=np.zeros(3, dtype=np.int32),
        time=np.array([t - 60 * 86400, t - 30 * 86400, t - 10 * 86400]),
        type_code=np.full(3, TYPE_CODE["purchase"], dtype=np.int8),
        value=np.array([20.0, 30.0, 40.0]),
    )
    # WHEN features are computed
    row = dict(zip(FEATURE_NAMES, compute_features(build_state(events).values, t)[0]))
    # THEN they are finite, RFM is right and absent signals are zero
    assert all(np.isfinite(v) for v in row.values())
    assert row["recency_days"] == 10.0
    assert row["days_since_purchase"] == 10.0
    assert np.isclose(row["log_net_spend"], np.log1p(90.0))
    assert np.isclose(row["avg_order_value"], 30.0)
    assert np.isclose(row["purchase_gap_ratio"], 10.0 / 25.0)
    assert row["complaints_recent"] == 0.0
    assert row["rate_login_short"] == 0.0
    assert row["session_minutes_per_day"] == 0.0


def test_silence_raises_recency_and_lowers_short_activity(as_of):
    events = make_events(n_users=50, n_events=2000, seed=5, end=as_of)
    state = build_state(events)
    now = compute_features(state.values, as_of.timestamp())
    later = compute_features(state.values, as_of.timestamp() + 30 * 86400)
    rec = FEATURE_NAMES.index("recency_days")
    act = FEATURE_NAMES.index("activity_rate_short")
    assert np.all(later[:, rec] == now[:, rec] + 30)
    assert np.all(later[:, act] < now[:, act])
