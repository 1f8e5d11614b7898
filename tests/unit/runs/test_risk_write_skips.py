"""A re-score writes a user's risk item only when something a consumer reads changes (chunk.unchanged).

Skipping must change nothing anyone reads: no decision, no message id, no count but `risk_writes_skipped`, no
exposure the lift report counts. The strongest check runs the same week twice, with and without the skip.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from chalicelib.runs import chunk
from chalicelib.runs.chunk import BOOKKEEPING_ATTRS, unchanged
from tests.unit.runs.test_runs_on_fakes import AS_OF, World

DAY = 86400.0
EXPIRES = 1_900_000_000


def stored_item(**over):
    """A risk item as a store hands it back, scored from state version 3."""
    item = {
        "user_id": "u1",
        "as_of": "2026-06-01T00:00:00Z",
        "churn_probability": 0.5,
        "risk_tier": "medium",
        "value_tier": "high",
        "reasons": ["inactive_days", "fewer_sessions"],
        "action": "winback_email",
        "model_version": "m1",
        "playbook_version": "p1",
        "scored_state_version": 3,
        "holdout": False,
        "rfm_segment": "at_risk",
        "activity_cluster": "weekly",
        "contact_message_id": "mid-1",
        "contact_status": "sent",
        "exposed_at": "2026-05-30T00:00:00Z",
        "exposure_group": "treated",
        "contact_ids": ["mid-1"],
        "run_id": "run-a",
        "scored_at": "2026-06-01T00:05:00Z",
        "source": "s3://bucket/incoming/a.csv",
        "risk_version": 4,
        "expires_at": EXPIRES,
    }
    item.update(over)
    return item


def new_item(**over):
    """The item a later re-score of the same state would write: only the bookkeeping differs."""
    item = stored_item(as_of="2026-06-02T00:00:00Z", run_id="sched-x", scored_at="2026-06-02T00:01:00Z")
    item.update(source="schedule", contact_ids=[])
    for gone in ("risk_version", "expires_at"):
        item.pop(gone)
    item.update(over)
    return item


def test_a_re_score_that_changes_only_bookkeeping_is_not_written():
    assert unchanged(stored_item(), new_item(), 3, EXPIRES)


def test_a_stored_item_read_back_with_decimals_compares_equal_to_the_floats_written():
    # DynamoDB hands numbers back as Decimal; the written item holds floats and ints
    old = stored_item(churn_probability=Decimal("0.5"), scored_state_version=Decimal(3), expires_at=Decimal(EXPIRES))
    assert unchanged(old, new_item(churn_probability=0.5049), 3, EXPIRES)


@pytest.mark.parametrize(
    "change",
    [
        {"risk_tier": "high"},
        {"value_tier": "low"},
        {"reasons": ["fewer_sessions", "inactive_days"]},  # the same codes in another order: another top reason
        {"reasons": ["inactive_days"]},
        {"action": ""},
        {"model_version": "m2"},
        {"playbook_version": "p2"},
        {"holdout": True},
        {"rfm_segment": "hibernating"},
        {"activity_cluster": "dormant"},
        {"promotion": "black-friday"},
        {"contact_message_id": "mid-2"},
        {"contact_status": "pending"},
        {"exposed_at": "2026-06-02T00:00:00Z"},
        {"exposure_group": "holdout"},
        {"returned_at": "2026-06-01T12:00:00Z"},
        {"churn_probability": 0.51},
        {"churn_probability": 0.49},
        {"a_field_added_later": "x"},
    ],
    ids=lambda change: next(iter(change)) + "=" + str(next(iter(change.values()))),
)
def test_any_change_a_consumer_reads_is_written(change):
    assert not unchanged(stored_item(), new_item(**change), 3, EXPIRES)


def test_a_probability_within_a_hundredth_of_the_stored_one_stands():
    assert unchanged(stored_item(), new_item(churn_probability=0.5099), 3, EXPIRES)
    assert unchanged(stored_item(), new_item(churn_probability=0.4901), 3, EXPIRES)


def test_a_score_of_newer_state_is_always_written():
    # new events were merged (state version 4): the state version orders runs, so the item must carry it
    assert not unchanged(stored_item(), new_item(scored_state_version=4), 4, EXPIRES)


def test_an_item_whose_expiry_would_move_or_was_never_set_is_written():
    assert not unchanged(stored_item(), new_item(), 3, EXPIRES + 1)
    old = stored_item()
    del old["expires_at"]  # written before expiries existed: the write gives it one
    assert not unchanged(old, new_item(), 3, EXPIRES)


def test_a_user_without_a_stored_item_is_written():
    assert not unchanged({}, new_item(), 3, EXPIRES)


# ---- runs on fakes ------------------------------------------------------------------------------------------


def scored_world(population, tmp_path) -> World:
    world = World()
    world.land("incoming/backfill.csv", population, tmp_path)
    world.process("incoming/backfill.csv")
    return world


def test_an_hourly_re_score_skips_the_writes_it_would_not_change_and_leaves_those_items_as_they_were(
    population, tmp_path
):
    # GIVEN a backfilled population
    world = scored_world(population, tmp_path)
    before = {uid: dict(item) for uid, item in world.tables.risks.items()}
    # WHEN the schedule re-scores everyone an hour later, with no new event
    world.now += 3600
    summary = world.pipeline.run_schedule(at=world.now)
    # THEN most writes are skipped, those items are exactly as stored, and every user is still counted as scored
    skipped = summary["risk_writes_skipped"]
    kept = [uid for uid, item in world.tables.risks.items() if item == before[uid]]
    assert skipped == len(kept) > len(population.user_ids) // 2
    assert summary["users_scored"] == len(population.user_ids)
    assert sum(summary["risk_tier"].values()) == len(population.user_ids)
    written = [uid for uid in world.tables.risks if uid not in kept]
    assert all(world.tables.risks[uid]["risk_version"] > before[uid]["risk_version"] for uid in written)


def test_a_redo_of_the_same_schedule_writes_nothing_and_sends_nothing(population, tmp_path):
    # GIVEN a schedule that ran (its record then lost, as if the attempt died before keeping it)
    world = scored_world(population, tmp_path)
    world.now += DAY
    first = world.pipeline.run_schedule(at=world.now)
    del world.bucket.runs[first["run_id"]]
    items = {uid: dict(item) for uid, item in world.tables.risks.items()}
    sent = len(world.queues.bodies())
    # WHEN the same run is done again
    again = world.pipeline.run_schedule(at=world.now)
    # THEN every item is skipped as already saying it all, and no message goes twice
    assert again["risk_writes_skipped"] == len(population.user_ids)
    assert world.tables.risks == items and len(world.queues.bodies()) == sent


def consumer_view(item):
    """What a consumer reads of a risk item (the probability to the hundredth the skip keeps it within)."""
    view = {k: v for k, v in item.items() if k not in BOOKKEEPING_ATTRS}
    view["churn_probability"] = item["churn_probability"]
    return view


def week_after_a_backfill(population, tmp_path, monkeypatch, skip: bool):
    """A backfill, then seven daily schedules with a trickle of events between them; return what landed."""
    if not skip:
        monkeypatch.setattr(chunk, "unchanged", lambda *_args: False)
    world = scored_world(population, tmp_path)
    summaries = []
    for day in range(1, 8):
        world.now = AS_OF.timestamp() + day * DAY
        if day % 2:  # every other day a seventh of the users come back with one event
            world.land(f"incoming/day-{day}.csv", trickle(population, day), tmp_path)
            summaries.append(world.process(f"incoming/day-{day}.csv"))
        summaries.append(world.pipeline.run_schedule(at=world.now))
    monkeypatch.undo()
    return world, summaries


def trickle(population, day):
    """One event of every seventh user (a different seventh each day), half a day before the schedule."""
    some = population.select(population.user_index % 7 == day % 7)
    _, first = np.unique(some.user_index, return_index=True)
    one = some.select(np.isin(np.arange(len(some)), first))
    one.time[:] = (AS_OF + timedelta(days=day - 0.5)).timestamp()
    return one


def without(summary, *names):
    out = {k: v for k, v in summary.items() if k not in names}
    out.pop("duration_s", None)
    out.pop("finished_at", None)
    return out


def test_skipping_unchanged_writes_changes_no_message_no_count_and_no_lift_over_a_week(
    population, tmp_path, monkeypatch
):
    # GIVEN the same week run twice: a backfill, seven daily schedules and a trickle of events every other day
    skipping, runs_skipping = week_after_a_backfill(population, tmp_path, monkeypatch, skip=True)
    writing, runs_writing = week_after_a_backfill(population, tmp_path, monkeypatch, skip=False)
    # THEN the week with skips wrote fewer risk items...
    assert sum(r.get("risk_writes_skipped", 0) for r in runs_skipping) > 0
    assert all(r.get("risk_writes_skipped", 0) == 0 for r in runs_writing)
    # ...and sent exactly the same messages, the same ids to the same queues
    assert {q: [m["message_id"] for m in ms] for q, ms in skipping.queues.sent.items()} == {
        q: [m["message_id"] for m in ms] for q, ms in writing.queues.sent.items()
    }
    # ...counted everything a user reads the same
    for a, b in zip(runs_skipping, runs_writing, strict=True):
        assert without(a, "risk_writes_skipped") == without(b, "risk_writes_skipped")
    # ...kept the same exposures (the lift report's input), and what every risk item tells a consumer
    assert skipping.pipeline.lift_report(as_of=skipping.now) == writing.pipeline.lift_report(as_of=writing.now)
    for uid, item in writing.tables.risks.items():
        kept = skipping.tables.risks[uid]
        assert {k: v for k, v in consumer_view(kept).items() if k != "churn_probability"} == {
            k: v for k, v in consumer_view(item).items() if k != "churn_probability"
        }
        assert abs(kept["churn_probability"] - item["churn_probability"]) < chunk.PROBABILITY_STEP
        assert kept["expires_at"] == item["expires_at"]


def test_a_late_file_after_a_schedule_that_skipped_its_users_scores_them_as_of_the_schedule(population, tmp_path):
    # GIVEN a backfill, then the schedule an hour later, which leaves most items unwritten (older as_of)
    world = scored_world(population, tmp_path)
    landed = world.now + 1800
    world.now += 3600
    sched = world.pipeline.run_schedule(at=world.now)
    skipped = [u for u, i in world.tables.risks.items() if i["as_of"] < sched["as_of"]]
    assert skipped and world.bucket.rescored_through() == world.now
    # WHEN a file that landed before the schedule is processed only now, for those users
    late = population.select(np.isin(population.user_index, [population.user_ids.index(u) for u in skipped[:5]]))
    _, first = np.unique(late.user_index, return_index=True)
    late = late.select(np.isin(np.arange(len(late)), first))
    late.time[:] = landed - 60
    world.land("incoming/late.csv", late, tmp_path)
    sent_before = len(world.queues.bodies())
    summary = world.pipeline.process_object("incoming/late.csv", landed_at=landed)
    # THEN they are scored again as of the schedule, never as of the older landing, as if it had written them
    assert summary["delivery"]["rescored_at_newer_as_of"] == 5
    assert {world.tables.risks[u]["as_of"] for u in skipped[:5]} == {sched["as_of"]}
    assert all(m["as_of"] == sched["as_of"] for m in world.queues.bodies()[sent_before:])


def test_the_re_score_mark_never_moves_back(world):
    world.bucket.mark_rescored(200.0)
    world.bucket.mark_rescored(100.0)
    assert world.bucket.rescored_through() == 200.0
