"""The schedule's sweep on fakes: failed deliveries drained, a bounded reconciliation listing, never the history."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from chalicelib.runs.deadline import Deadline
from chalicelib.runs.file_run import object_run_id
from churnguard_offline.lambda_events import queued_notification, s3_object_created
from tests.fakes import FakeMissed
from tests.unit.runs.test_attempts import _read_fails_for
from tests.unit.runs.test_runs_on_fakes import SETTINGS, World

DAY = 86400.0
NO_LISTING = replace(SETTINGS, sweep_list_max_keys=0, sweep_min_age_seconds=0.0)


def notice(world: World, key: str, at: float | None = None) -> dict:
    """Return an S3 notification of a landed key, as its SQS body holds it (parsed)."""
    event = s3_object_created("bucket", key, etag="e", size=1, event_time=world.now if at is None else at)
    return json.loads(queued_notification(event))


def failed_invocation(event: dict) -> dict:
    """Return the record Lambda sends to an on-failure destination for an asynchronous event that failed."""
    return {
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorType": "RuntimeError"},
    }


@pytest.fixture
def few(population):
    return population.select(population.user_index < 12)


def sweep(world: World) -> list[dict]:
    return world.pipeline.schedule.sweep(world.now, Deadline())


def test_the_sweep_processes_a_dead_lettered_notification_and_a_failed_invocation_and_deletes_both(few, tmp_path):
    # GIVEN a file whose queue message went to the dead-letter queue, and one whose asynchronous invocation failed
    missed = FakeMissed()
    world = World(NO_LISTING, missed=missed)
    world.land("incoming/a.csv", few, tmp_path)
    world.land("incoming/b.csv", few.select(few.user_index < 6), tmp_path)
    missed.add(notice(world, "incoming/a.csv"), "files-dlq")
    missed.add(failed_invocation(notice(world, "incoming/b.csv")), "files-failed")
    # WHEN the schedule sweeps
    swept = sweep(world)
    # THEN both files are processed and both messages deleted
    assert sorted((s["key"], s["status"]) for s in swept) == [("incoming/a.csv", "succeeded")] * 1 + [
        ("incoming/b.csv", "succeeded")
    ]
    assert len(missed.deleted) == 2 and not missed.waiting and not missed.hidden
    assert set(world.tables.states) == set(few.user_ids)


def test_a_message_whose_file_is_in_progress_elsewhere_stays_until_its_file_is_done(few, tmp_path):
    # GIVEN a dead-lettered notification of a file whose run another attempt holds
    missed = FakeMissed()
    world = World(NO_LISTING, missed=missed)
    world.land("incoming/a.csv", few, tmp_path)
    rid = object_run_id("bucket", "incoming/a.csv", world.bucket.open("incoming/a.csv").identity)
    world.tables.leases.take(rid, "other", world.now + 600, world.now)
    missed.add(notice(world, "incoming/a.csv"))
    # WHEN the schedule sweeps
    assert [s["status"] for s in sweep(world)] == ["in_progress"]
    # THEN the message is kept (it comes back after its visibility timeout)
    assert missed.deleted == [] and len(missed.hidden) == 1
    # WHEN the lease ends and the next sweep meets the message again
    world.tables.leases.release(rid, "other")
    missed.reappear()
    assert [s["status"] for s in sweep(world)] == ["succeeded"]
    # THEN it is deleted, and a copy that comes again finds the file done
    assert len(missed.deleted) == 1
    missed.add(notice(world, "incoming/a.csv"))
    assert [s["status"] for s in sweep(world)] == ["duplicate"]


def test_a_poison_file_in_the_dead_letter_queue_is_quarantined_after_its_attempts_and_its_message_deleted(
    monkeypatch, few, tmp_path
):
    # GIVEN a dead-lettered notification of a file whose every read fails
    missed = FakeMissed()
    world = World(replace(NO_LISTING, max_file_attempts=2), missed=missed)
    world.land("incoming/poison.csv", few, tmp_path)
    _read_fails_for(monkeypatch, "incoming/poison.csv", RecursionError("maximum recursion depth exceeded"))
    missed.add(notice(world, "incoming/poison.csv"))
    # WHEN three sweeps meet it
    statuses = []
    for _ in range(3):
        statuses.append([s["status"] for s in sweep(world)])
        missed.reappear()
    # THEN two fail on it (the message kept), the third quarantines it (a final status) and deletes the message
    assert statuses == [["failed"], ["failed"], ["quarantined"]]
    assert len(missed.deleted) == 1 and "incoming/poison.csv" in world.bucket.quarantined


def test_a_malformed_dead_letter_is_dropped_and_deleted_and_the_rest_are_processed(few, tmp_path):
    missed = FakeMissed()
    world = World(NO_LISTING, missed=missed)
    world.land("incoming/a.csv", few, tmp_path)
    missed.add("{not json")
    missed.add(notice(world, "incoming/a.csv"))
    swept = sweep(world)
    assert [s["status"] for s in swept] == ["dropped", "succeeded"]
    assert len(missed.deleted) == 2


def test_one_sweep_handles_at_most_sweep_max_messages(few, tmp_path):
    missed = FakeMissed()
    world = World(replace(NO_LISTING, sweep_max_messages=2), missed=missed)
    for i in range(5):
        world.land(f"incoming/{i}.csv", few.select(few.user_index == i), tmp_path)
        missed.add(notice(world, f"incoming/{i}.csv"))
    assert len(sweep(world)) == 2 and len(missed.waiting) == 3


def test_the_reconciliation_lists_a_bounded_window_resuming_where_the_last_stopped(few, tmp_path):
    # GIVEN 25 files processed before and 2 whose notification never came, at the end of the prefix
    world = World(replace(SETTINGS, sweep_list_max_keys=10, sweep_min_age_seconds=0.0))
    for i in range(25):
        world.land(f"incoming/{i:03}.csv", few.select(few.user_index == i % 12), tmp_path)
        world.process(f"incoming/{i:03}.csv")
    for i in (25, 26):
        world.land(f"incoming/{i:03}.csv", few.select(few.user_index == i % 12), tmp_path)
    # WHEN the schedule sweeps on three days
    found, calls = [], []
    for _ in range(3):
        before = world.bucket.list_calls
        found.append([s["key"] for s in sweep(world)])
        calls.append(world.bucket.list_calls - before)
    # THEN each sweep listed one window of ten keys (one list call), the third reached the two missed files
    assert calls == [1, 1, 1]
    assert found == [[], [], ["incoming/025.csv", "incoming/026.csv"]]
    assert world.tables.ledger.cursor() is None  # the end of the prefix: the next sweep starts over


def test_the_reconciliation_never_passes_a_file_younger_than_the_minimum_age(few, tmp_path):
    # GIVEN a file landed a minute ago, before one landed a day ago (in key order), neither processed
    world = World(replace(SETTINGS, sweep_min_age_seconds=900.0))
    world.bucket.land("incoming/a.csv", b"user_id,event_time,event_type\nu1,2026-05-31,login\n", _at(world, 60))
    world.bucket.land("incoming/b.csv", b"user_id,event_time,event_type\nu2,2026-05-30,login\n", _at(world, DAY))
    # WHEN the schedule sweeps
    # THEN it stops at the young file, and resumes from it the next day, when both are swept
    assert sweep(world) == [] and world.tables.ledger.cursor() is None
    world.now += DAY
    assert [s["key"] for s in sweep(world)] == ["incoming/a.csv", "incoming/b.csv"]


def test_the_reconciliation_leaves_files_older_than_the_ledger_remembers(few, tmp_path):
    # GIVEN a file that landed longer ago than the ledger's retention, never processed (or forgotten)
    world = World(replace(SETTINGS, sweep_min_age_seconds=0.0))
    world.bucket.land("incoming/old.csv", b"user_id,event_time,event_type\nu1,2026-01-01,login\n", _at(world, 40 * DAY))
    # WHEN the schedule sweeps
    # THEN it is left alone: merging it again could count its events twice
    assert sweep(world) == [] and world.tables.states == {}


def _at(world: World, ago: float) -> datetime:
    return datetime.fromtimestamp(world.now - ago, UTC)
