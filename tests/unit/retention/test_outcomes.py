"""Exposures, returns and the lift report: the interval matches the published method; a planted effect is found."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chalicelib.retention.outcomes import EventIndex, lift_report, newcombe_interval, outcome
from chalicelib.scoring.events import TYPE_CODE, EventBatch
from chalicelib.scoring.scorer import iso_time

DAY = 86400.0
T0 = 1_780_000_000.0


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 against 48/80
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_first_event_after_a_time_per_user():
    events = EventBatch(
        user_ids=["a", "b"],
        user_index=np.array([0, 1, 0, 0], dtype=np.int32),
        time=np.array([30.0, 5.0, 10.0, 20.0]),
        type_code=np.full(4, TYPE_CODE["login"], dtype=np.int8),
        value=np.full(4, np.nan),
    )
    index = EventIndex(events)
    assert index.first_after("a", 10.0) == 20.0
    assert index.first_after("a", 0.0) == 10.0
    assert index.first_after("a", 30.0) is None
    assert index.first_after("b", 1.0) == 5.0
    assert index.first_after("nobody", 0.0) is None


_USERS = itertools.count()


def _exposure(
    group: str, returned_after_days: float | None, tier="high", action="win_back_push", user: str | None = None
) -> dict:
    """Return an exposure at T0 of a user of its own (or of `user`)."""
    returned = None if returned_after_days is None else iso_time(T0 + returned_after_days * DAY)
    return {
        "user_id": user or f"u{next(_USERS)}",
        "exposed_at": iso_time(T0),
        "group": group,
        "risk_tier": tier,
        "action": action,
        "returned_at": returned,
    }


def test_an_outcome_is_pending_until_the_horizon_passes():
    assert outcome(_exposure("treated", 3), 30, T0 + 5 * DAY) == "returned"
    assert outcome(_exposure("treated", None), 30, T0 + 5 * DAY) == "pending"
    assert outcome(_exposure("treated", None), 30, T0 + 31 * DAY) == "lost"
    assert outcome(_exposure("treated", 45), 30, T0 + 60 * DAY) == "lost"  # came back, but too late


def test_the_report_recovers_a_planted_treatment_effect():
    # GIVEN 3,000 treated users who come back 45% of the time and 3,000 held out who come back 30%
    rng = np.random.default_rng(4)
    exposures = [_exposure("treated", 5 if r < 0.45 else None) for r in rng.random(3000)]
    exposures += [_exposure("holdout", 5 if r < 0.30 else None) for r in rng.random(3000)]
    exposures += [_exposure("treated", None, tier="medium", action="coupon_email")]  # a cell with no holdout

    # WHEN the report is made after the horizon
    report = lift_report(exposures, 30, T0 + 40 * DAY)

    # THEN the overall lift is near 0.15, its interval holds it and excludes no effect
    overall = report["rows"][0]
    assert (overall["risk_tier"], overall["action"]) == ("all", "all")
    assert overall["treated"]["returned"] + overall["treated"]["lost"] == 3001
    lo, hi = overall["lift_ci95"]
    assert lo < 0.15 < hi and lo > 0
    assert overall["lift"] == pytest.approx(0.15, abs=0.03)
    # AND a cell without a holdout has rates but no lift
    coupon = next(r for r in report["rows"] if r["action"] == "coupon_email")
    assert coupon["lift"] is None and coupon["treated"]["lost"] == 1


def test_exposures_before_since_are_left_out():
    report = lift_report([_exposure("treated", 1)], 30, T0 + 40 * DAY, since=T0 + DAY)
    assert report["rows"] == []


def test_an_exposure_found_closed_and_still_open_is_counted_once_with_its_earliest_return():
    # GIVEN one exposure kept as closed before the write that replaces it, twice (a crash and its redo),
    # and still on the user's risk item because that write never happened; one copy saw the return
    copies = [
        _exposure("treated", None, user="u1"),
        _exposure("treated", 3, user="u1"),
        _exposure("treated", None, user="u1"),
    ]
    # AND another user's exposure, once
    others = [_exposure("holdout", None, user="u2")]

    # WHEN the report is made after the horizon
    overall = lift_report(copies + others, 30, T0 + 40 * DAY)["rows"][0]

    # THEN each exposure counts once, the first as returned
    assert overall["treated"] == {"returned": 1, "lost": 0, "pending": 0, "win_back_rate": 1.0}
    assert overall["holdout"]["lost"] == 1
