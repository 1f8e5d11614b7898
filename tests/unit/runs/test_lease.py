"""One attempt at a time per run, on fakes: a live lease keeps copies out, a lost one stops its holder."""

from __future__ import annotations

import json
import time

import pytest

from chalicelib.aws.leases import lease_key
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.file_run import object_run_id
from chalicelib.runs.lease import LEASE_MARGIN_SECONDS, UNBOUNDED_LEASE_SECONDS, Lease
from chalicelib.runs.ports import LeaseHolder
from chalicelib.runs.records import merge_record
from tests.fakes import FakeLeases
from tests.unit.ingest.conftest import HEADER, read, rejects
from tests.unit.runs.test_runs_on_fakes import AS_OF, World

KEY = "incoming/day.csv"


def run_id_of(world: World, key: str = KEY) -> str:
    """Return the run id of a landed object."""
    return object_run_id(world.bucket.bucket, key, world.bucket.open(key).etag)


def test_a_copy_that_finds_the_run_leased_sends_nothing_and_says_who_holds_it(world, population, tmp_path):
    # GIVEN a file whose run another attempt is doing now
    world.land(KEY, population, tmp_path)
    run_id = run_id_of(world)
    world.tables.leases.take(run_id, "other", world.now + 60, world.now)
    # WHEN a copy of its event is processed
    summary = world.process(KEY)
    # THEN it leaves the run to that attempt: nothing merged, sent or recorded, the lease untouched, no raise
    assert summary["status"] == "in_progress"
    assert summary["held_by"] == {"holder": "other", "until": "2026-06-01T00:01:00Z"}
    assert not world.tables.states and not world.queues.bodies() and not world.bucket.runs
    assert world.tables.leases.held[run_id] == LeaseHolder("other", world.now + 60)


def test_a_lease_that_ran_out_is_taken_over_and_released_at_the_end(world, population, tmp_path):
    # GIVEN a file whose last attempt died holding the lease, which has since run out
    world.land(KEY, population, tmp_path)
    run_id = run_id_of(world)
    world.tables.leases.take(run_id, "dead", world.now - 1, world.now - 900)
    # WHEN its event is delivered again
    summary = world.process(KEY)
    # THEN the redo takes the run over, finishes it, and gives the lease up
    assert summary["status"] == "succeeded"
    assert [r for r, _ in world.tables.leases.taken] == [run_id, run_id]
    assert world.tables.leases.held == {}


def test_the_lease_is_released_when_a_run_is_interrupted_or_fails(world, population, tmp_path):
    world.land(KEY, population, tmp_path)
    left = iter([100.0, 1.0])
    with pytest.raises(RunInterrupted):
        world.process(KEY, deadline=Deadline(lambda: next(left), reserve=20.0, clock=lambda: 0.0))
    assert world.tables.leases.held == {}
    # a failure inside the run releases it too, so Lambda's retry can start at once
    world.queues.send = lambda tier, messages: (_ for _ in ()).throw(OSError("connection reset"))
    with pytest.raises(OSError):
        world.process(KEY)
    assert world.tables.leases.held == {}


def test_a_holder_that_lost_its_lease_stops_before_its_next_chunk(world, population, tmp_path):
    # GIVEN a run of three chunks whose lease another attempt takes over while the first chunk is sending
    world.land(KEY, population, tmp_path)
    run_id = run_id_of(world)
    real_send = world.queues.send
    sends = []

    def send(tier, messages):
        world.tables.leases.held[run_id] = LeaseHolder("taker", world.now + 600)
        sends.append(len(messages))
        return real_send(tier, messages)

    world.queues.send = send
    # WHEN the run goes on
    summary = world.process(KEY)
    # THEN it stopped before the second chunk: only the first chunk's messages went out, and it left the
    # bookkeeping (ledger, run record) and the lease to the taker
    assert summary["status"] == "lease_lost" and summary["held_by"]["holder"] == "taker"
    first_chunk = set(world.bucket.checkpoints) == {run_id} and world.bucket.checkpoints[run_id]["done"] == 1
    assert first_chunk and len(world.queues.bodies()) == sum(sends)
    assert not world.tables.ledger and not world.bucket.runs
    assert world.tables.leases.held[run_id].holder == "taker"


def test_a_copy_of_a_schedule_event_that_finds_the_run_leased_does_nothing(world, population, tmp_path):
    world.land(KEY, population, tmp_path)
    world.process(KEY)
    before = len(world.queues.bodies())
    at = AS_OF.timestamp() + 30 * 86400
    world.tables.leases.take("sched-20260701T000000Z", "other", world.now + 60, world.now)
    summary = world.pipeline.run_schedule(at=at)
    assert summary["status"] == "in_progress" and summary["held_by"]["holder"] == "other"
    assert len(world.queues.bodies()) == before and "sched-20260701T000000Z" not in world.bucket.runs


def test_a_lease_lasts_until_the_invocation_ends_plus_a_margin():
    store = FakeLeases()
    # a Lambda invocation: until its end, whatever the renewals
    lease = Lease(store, "r", clock=lambda: 1000.0, invocation_end=1300.0)
    assert lease.take() is None and lease.until == 1300.0 + LEASE_MARGIN_SECONDS
    lease.renew()
    assert store.held["r"].until == 1300.0 + LEASE_MARGIN_SECONDS
    # without a deadline: Lambda's longest timeout from each renewal
    now = [0.0]
    free = Lease(store, "s", clock=lambda: now[0], invocation_end=None)
    free.take()
    now[0] = 500.0
    free.renew()
    assert store.held["s"].until == 500.0 + UNBOUNDED_LEASE_SECONDS + LEASE_MARGIN_SECONDS


def test_a_deadline_from_a_lambda_context_knows_when_the_invocation_ends():
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 300_000

    deadline = Deadline.from_lambda_context(Context())
    assert deadline.ends_at == pytest.approx(time.time() + 300, abs=5)
    assert Deadline().ends_at is None


def test_only_one_of_many_takers_holds_a_lease_at_a_time():
    store = FakeLeases()
    assert store.take("r", "a", 100.0, 0.0) is None
    assert store.take("r", "b", 100.0, 50.0) == LeaseHolder("a", 100.0)
    assert store.renew("r", "b", 200.0) == LeaseHolder("a", 100.0)
    store.release("r", "b")  # not b's to release
    assert store.held["r"].holder == "a"
    assert store.take("r", "b", 300.0, 101.0) is None  # a's ran out
    assert store.renew("r", "a", 400.0) == LeaseHolder("b", 300.0)


def test_a_run_record_written_again_keeps_every_count_of_the_earlier_one():
    # GIVEN the record of a run that sent 62 messages
    first = {"run_id": "r", "status": "succeeded", "messages_sent": {"high": 40, "medium": 22}, "users_scored": 80}
    first = merge_record(None, {**first, "finished_at": "t1"})
    # WHEN another attempt of the run, which found every message sent, writes its summary
    again = {"run_id": "r", "status": "succeeded", "messages_sent": {"high": 0, "medium": 0}, "users_scored": 80}
    merged = merge_record(json.loads(json.dumps(first)), {**again, "finished_at": "t2"})
    # THEN the record still counts the 62, and lists both attempts
    assert merged["messages_sent"] == {"high": 40, "medium": 22} and merged["users_scored"] == 80
    assert [a["finished_at"] for a in merged["attempts"]] == ["t1", "t2"]
    assert merged["attempts"][1]["messages_sent"] == {"high": 0, "medium": 0}


def test_a_run_record_is_merged_with_the_one_stored(world, population, tmp_path):
    world.land(KEY, population, tmp_path)
    run_id = run_id_of(world)
    # an earlier attempt's record, written before it was finished (a final one would make this run a duplicate)
    world.bucket.runs[run_id] = {"run_id": run_id, "status": "lease_lost", "messages_sent": {"high": 999}}
    summary = world.process(KEY)
    record = world.bucket.runs[run_id]
    assert record["messages_sent"]["high"] == 999 > summary["messages_sent"]["high"]
    assert record["status"] == "succeeded" and len(record["attempts"]) == 1


def test_a_lease_key_can_never_be_a_user_id():
    # a lease item shares the state table with users: the reader refuses its key as a user id
    result = read(HEADER + f"{lease_key('obj-1')},2024-03-01,login,\n")
    assert [r["reason"] for r in rejects(result)] == ["user_id_control_chars"]
