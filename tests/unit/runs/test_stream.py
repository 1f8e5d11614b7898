"""The files queue's batches on fakes: each message fails or succeeds alone, and nothing finished is merged twice."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import count

import pytest

from chalicelib.observability import COUNT, FILES_MESSAGES_DROPPED
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.file_run import object_run_id
from chalicelib.runs.ports import LeaseHolder
from churnguard_offline.lambda_events import queued_notification, s3_object_created, sqs_batch
from tests.unit.runs.test_attempts import _read_fails_for
from tests.unit.runs.test_runs_on_fakes import SETTINGS, Recorder, World

DAY = 86400.0


def notice(world: World, key: str, etag: str = "e", at: float | None = None, bucket: str = "bucket") -> str:
    """Return the SQS body S3 sends for a landed key (the key fully URL-encoded)."""
    at = world.now if at is None else at
    return queued_notification(s3_object_created(bucket, key, etag=etag, size=1, event_time=at))


def batch(world: World, bodies: list[str], deadline: Deadline | None = None) -> list[str]:
    """Hand one SQS batch to the pipeline; return the ids of the messages failed back (ids m0, m1, ...)."""
    ids = [f"m{i}" for i in range(len(bodies))]
    response = world.pipeline.process_queue_batch(sqs_batch(bodies, ids=ids), deadline or Deadline())
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def run_id(world: World, key: str) -> str:
    return object_run_id("bucket", key, world.bucket.open(key).identity)


@pytest.fixture
def few(population):
    """A dozen users: one chunk."""
    return population.select(population.user_index < 12)


def test_a_batch_with_bad_messages_fails_none_of_them_and_counts_the_dropped_ones(few, tmp_path):
    # GIVEN a good file's notification among a malformed body, a non-S3 body, another bucket's notification,
    # a key outside the incoming prefix, a hostile key and S3's test event
    metrics = Recorder()
    world = World(metrics=metrics)
    world.land("incoming/a b/day.csv", few, tmp_path)
    world.land("elsewhere/day.csv", few, tmp_path)
    bodies = [
        "{not json",
        json.dumps({"Records": [{"eventSource": "aws:sns"}]}),
        notice(world, "incoming/a b/day.csv", bucket="another-bucket"),
        notice(world, "elsewhere/day.csv"),
        notice(world, "incoming/../ledger/x.csv"),
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "bucket"}),
        notice(world, "incoming/a b/day.csv"),
    ]
    # WHEN the batch is handled
    failed = batch(world, bodies)
    # THEN no message comes back: the good file is scored, the three unusable bodies are counted as dropped
    assert failed == []
    assert set(world.tables.states) == set(few.user_ids)
    dropped = [c for c in metrics.calls if c[2].get("name") == FILES_MESSAGES_DROPPED]
    assert dropped == [("add_metric", (), {"name": FILES_MESSAGES_DROPPED, "unit": COUNT, "value": 1})] * 3
    # AND only the good file has a ledger record (the key outside the prefix and the hostile key none)
    assert {key for key, _ in world.tables.ledger} == {"incoming/a b/day.csv"}


def test_a_failing_file_fails_its_message_alone_and_is_quarantined_after_its_attempts(monkeypatch, few, tmp_path):
    # GIVEN a batch of a good file and a file whose every read fails
    world = World(replace(SETTINGS, max_file_attempts=2))
    world.land("incoming/good.csv", few, tmp_path)
    world.land("incoming/poison.csv", few, tmp_path)
    _read_fails_for(monkeypatch, "incoming/poison.csv", RecursionError("maximum recursion depth exceeded"))
    bodies = [notice(world, "incoming/poison.csv"), notice(world, "incoming/good.csv")]
    # WHEN SQS delivers it, then the failed message twice more
    first = batch(world, bodies)
    again = [batch(world, bodies[:1]) for _ in range(2)]
    # THEN only the poison message came back, until its third delivery quarantined the file (a final status)
    assert first == ["m0"] and again == [["m0"], []]
    assert "incoming/poison.csv" in world.bucket.quarantined
    assert (
        world.tables.ledger[("incoming/poison.csv", next(e for k, e in world.tables.ledger if "poison" in k))]["status"]
        == "quarantined"
    )
    assert set(world.tables.states) == set(few.user_ids)


def test_the_same_file_twice_in_one_batch_is_merged_once(few, tmp_path):
    # GIVEN a batch holding the same file's notification twice (S3 delivers at least once)
    world = World()
    world.land("incoming/day.csv", few, tmp_path)
    body = notice(world, "incoming/day.csv")
    # WHEN it is handled
    failed = batch(world, [body, body])
    # THEN both messages go, and every user's events are merged once
    assert failed == []
    assert sum(world.tables.events_of(u) for u in few.user_ids) == len(few)
    assert world.bucket.runs[run_id(world, "incoming/day.csv")]["status"] == "succeeded"


def test_a_file_in_progress_in_another_batch_comes_back_and_is_then_found_done(few, tmp_path):
    # GIVEN a file whose run's lease another invocation holds (the same notification in a concurrent batch)
    world = World()
    world.land("incoming/day.csv", few, tmp_path)
    rid = run_id(world, "incoming/day.csv")
    assert world.tables.leases.take(rid, "other", world.now + 600, world.now) is None
    body = notice(world, "incoming/day.csv")
    # WHEN this batch meets it
    failed = batch(world, [body])
    # THEN its message comes back, and nothing of the file was merged here
    assert failed == ["m0"] and world.tables.states == {}
    # WHEN the other invocation finished it (here: its lease ends and this redelivery runs it), and SQS delivers
    # the message again once more after that
    world.tables.leases.release(rid, "other")
    assert batch(world, [body]) == []
    assert batch(world, [body]) == []
    # THEN the file was merged once
    assert sum(world.tables.events_of(u) for u in few.user_ids) == len(few)


def test_a_file_checkpointed_out_of_time_comes_back_and_its_redelivery_continues_it(population, tmp_path):
    # GIVEN a three-chunk file and an invocation with time for one chunk only
    world = World()
    world.land("incoming/day.csv", population, tmp_path)
    clean = World()
    clean.land("incoming/day.csv", population, tmp_path)
    clean.process("incoming/day.csv")
    short = Deadline(seconds_left=lambda: 20.0, reserve=20.0)
    body = notice(world, "incoming/day.csv")
    # WHEN the batch is handled in it, then redelivered with time to spare
    assert batch(world, [body], short) == ["m0"]
    assert world.bucket.checkpoints and not world.tables.ledger
    assert batch(world, [body]) == []
    # THEN the redelivery continued after the checkpoint and the state is a single run's
    record = world.bucket.runs[run_id(world, "incoming/day.csv")]
    assert record["status"] == "succeeded" and record["resumed_after_chunks"] == 1
    assert {u: world.tables.events_of(u) for u in population.user_ids} == {
        u: clean.tables.events_of(u) for u in population.user_ids
    }


def test_a_message_that_will_not_fit_in_the_time_left_is_failed_back_unstarted(few, tmp_path):
    # GIVEN a batch of three files, and an invocation whose first message takes 10 s and leaves 30 s, no more than
    # the reserve plus one and a half of that message
    world = World()
    for name in ("a", "b", "c"):
        world.land(f"incoming/{name}.csv", few, tmp_path)
    ticks = count(step=5)
    deadline = Deadline(seconds_left=lambda: 30.0, reserve=20.0, clock=lambda: float(next(ticks)))
    bodies = [notice(world, f"incoming/{name}.csv") for name in ("a", "b", "c")]
    # WHEN it is handled
    failed = batch(world, bodies, deadline)
    # THEN the two that do not fit come back, never started: no run record, checkpoint, attempt or ledger of theirs
    assert failed == ["m1", "m2"]
    assert list(world.bucket.runs) == [run_id(world, "incoming/a.csv")]
    assert world.bucket.checkpoints == {} and world.bucket.attempts == {}
    assert {key for key, _ in world.tables.ledger} == {"incoming/a.csv"}


def test_a_notification_older_than_the_ledger_remembers_is_dropped_never_merged(few, tmp_path):
    # GIVEN a notification of a file that landed longer ago than the ledger's retention (a redrive weeks later)
    metrics = Recorder()
    world = World(metrics=metrics)
    world.land("incoming/day.csv", few, tmp_path)
    old = world.now - SETTINGS.ledger_retention_seconds
    # WHEN it is handled
    failed = batch(world, [notice(world, "incoming/day.csv", at=old)])
    # THEN it goes, counted, and nothing is merged: the ledger could no longer tell a processed file from a new one
    assert failed == [] and world.tables.states == {}
    assert ("add_metric", (), {"name": FILES_MESSAGES_DROPPED, "unit": COUNT, "value": 1}) in metrics.calls


def test_a_file_whose_run_was_taken_over_mid_run_comes_back_and_is_never_merged_twice(population, tmp_path):
    # GIVEN a three-chunk file whose lease another attempt takes over while this one sends its first chunk
    world = World()
    world.land("incoming/day.csv", population, tmp_path)
    rid = run_id(world, "incoming/day.csv")
    real_send = world.queues.send

    def send(tier, messages):
        world.tables.leases.held[rid] = LeaseHolder("taker", world.now + 600)
        return real_send(tier, messages)

    world.queues.send = send
    body = notice(world, "incoming/day.csv")
    # WHEN the batch is handled
    failed = batch(world, [body])
    # THEN its message comes back (the run ended lease_lost, leaving the rest to the taker)
    assert failed == ["m0"] and not world.tables.ledger
    # WHEN the taker's lease ends and SQS delivers the message again
    world.queues.send = real_send
    world.tables.leases.held.pop(rid)
    assert batch(world, [body]) == []
    # THEN the file is done, every event merged once
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)
    assert world.bucket.runs[rid]["status"] == "succeeded"
