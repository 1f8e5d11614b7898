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
                ("gone", CUTOFF - 400 * DAY),  # outside the lookback window
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
