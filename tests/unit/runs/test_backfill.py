"""The backfill on fakes: a file past one invocation, split into ranges and shards, gives one invocation's results."""

from __future__ import annotations

import gzip
import io
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.errors import ChurnGuardError
from chalicelib.runs.backfill import routing
from chalicelib.runs.backfill.cuts import cut_file
from chalicelib.runs.backfill.workers import RangeNotReady, ShardBusy
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.ports import BACKFILL
from chalicelib.scoring.events import EventBatch
from churnguard_offline.generate import generate_events, write_event_log
from tests.fakes import FakeWorkflows, _etag
from tests.unit.runs.backfill_driver import run_backfill
from tests.unit.runs.test_runs_on_fakes import AS_OF, SETTINGS, World

KEY = "incoming/backfill.csv"
# What differs between two runs of the same file on purpose: when each item was written.
RUN_TIMES = ("scored_at", "contact_claimed_at")


class Killed(ChurnGuardError):
    """The planted crash: an invocation dies at an AWS call."""


@pytest.fixture(scope="module")
def few() -> EventBatch:
    """Half a year of 30 users: one model call per shard is what these tests pay for."""
    return generate_events(30, 180, 13, AS_OF)


def file_bytes(batch: EventBatch, tmp_path, extra: str = "") -> bytes:
    path = tmp_path / "events.csv"
    write_event_log(batch, path)
    return path.read_bytes() + extra.encode()


def backfill_world(data: bytes, ranges: int = 8, shards: int = 16, **settings: Any) -> tuple[World, FakeWorkflows]:
    """A world whose files all go to the backfill, cut into about `ranges` ranges of `shards` shards."""
    workflows = FakeWorkflows()
    chosen = {"backfill_range_bytes": (len(data) - 100) // ranges, "backfill_shards": shards, **settings}
    tuned = replace(SETTINGS, backfill_threshold_bytes=1, **chosen)
    return World(tuned, workflows=workflows), workflows


def risk_view(world: World) -> dict[str, dict[str, Any]]:
    return {uid: {k: v for k, v in item.items() if k not in RUN_TIMES} for uid, item in world.tables.risks.items()}


def state_view(world: World) -> dict[str, Any]:
    return {uid: {**s, "row": s["row"].tolist()} for uid, s in world.tables.states.items()}


def single(data: bytes, key: str = KEY) -> tuple[World, dict[str, Any]]:
    world = World()
    world.bucket.land(key, data)
    return world, world.process(key)


@pytest.mark.slow  # 16 shards score in 16 model calls of ~0.5 s each
def test_a_file_in_8_ranges_and_16_shards_run_shuffled_with_a_killed_child_equals_one_invocation(population, tmp_path):
    # GIVEN a file processed in one invocation, and the same file past the threshold on the backfill
    data = file_bytes(population, tmp_path)
    one, expected = single(data)
    world, workflows = backfill_world(data)
    world.bucket.land(KEY, data)
    handed = world.process(KEY)
    assert handed["status"] == routing.HANDED_OVER and not handed["already_started"]
    # ... one shard child dies mid-chunk (its states written, its risk items not) and is run again
    real_put_risks, killed = world.tables.put_risks, []

    def child(kind: str, item: dict[str, Any]) -> Any:
        if kind == "shard" and not killed and item["shard"] == 5:

            def dying(writes):
                killed.append(len(writes))
                raise Killed("killed at PutItem of the risk items")

            world.tables.put_risks = dying
            with pytest.raises(Killed):
                world.pipeline.backfill.shard(item)
            world.tables.put_risks = real_put_risks
        return getattr(world.pipeline.backfill, kind)(item)

    # WHEN the execution runs its children in shuffled order
    summary = run_backfill(world.pipeline, workflows, handed["run_id"], seed=7, child=child)
    # THEN the state items, risk items and messages are those of the single invocation
    assert killed, "the planted crash never happened"
    assert summary["status"] == "succeeded" and summary["backfill"]["ranges"] == 8
    assert summary["backfill"]["shards"] == 16
    assert state_view(world) == state_view(one)
    assert risk_view(world) == risk_view(one)
    assert sorted(m["message_id"] for m in world.queues.bodies()) == sorted(
        m["message_id"] for m in one.queues.bodies()
    )
    assert sorted(world.queues.bodies(), key=lambda m: m["message_id"]) == sorted(
        one.queues.bodies(), key=lambda m: m["message_id"]
    )
    # ... the run record counts what the single run counted, and the ledger says it is done
    for name in ("rows", "users_scored", "risk_tier", "value_tier", "messages_claimed", "messages_sent"):
        assert summary[name] == expected[name], name
    # (the killed child's users were merged before it died: its rerun finds them merged, as a redo of one run does)
    assert summary["users_new"] + summary["delivery"]["duplicates_suppressed"]["state"] == expected["users_new"]
    assert world.bucket.runs[summary["run_id"]]["status"] == "succeeded"
    assert world.tables.ledger[(KEY, world.bucket.open(KEY).etag)]["status"] == "succeeded"
    # ... and the working objects are gone
    assert not world.bucket.backfill


@pytest.mark.slow  # a model call per shard and the single run to compare with
def test_a_duplicate_event_during_the_backfill_starts_nothing_and_after_it_is_a_duplicate(few, tmp_path):
    # GIVEN a file handed to the backfill
    data = file_bytes(few, tmp_path)
    world, workflows = backfill_world(data, ranges=2, shards=3)
    world.bucket.land(KEY, data)
    first = world.process(KEY)
    # WHEN its event is delivered again while the execution runs
    again = world.process(KEY)
    # THEN no second execution starts and nothing is scored twice
    assert again["status"] == routing.HANDED_OVER and again["already_started"]
    assert len(workflows.executions) == 1 and not world.tables.states
    summary = run_backfill(world.pipeline, workflows, first["run_id"])
    sent = len(world.queues.bodies())
    # ... and once it finished, a third delivery is a duplicate that sends nothing
    third = world.process(KEY)
    assert summary["status"] == "succeeded" and third["status"] == "duplicate"
    assert len(world.queues.bodies()) == sent and len(workflows.executions) == 1


@pytest.mark.slow  # a model call per shard and the single run to compare with
def test_a_rerun_of_every_child_and_of_finish_merges_nothing_twice(few, tmp_path):
    # GIVEN a backfill that ran to its end
    data = file_bytes(few, tmp_path)
    one, _ = single(data)
    world, workflows = backfill_world(data, ranges=3, shards=4)
    world.bucket.land(KEY, data)
    run_id = world.process(KEY)["run_id"]
    calls: list[tuple[str, dict[str, Any]]] = []

    def child(kind: str, item: dict[str, Any]) -> Any:
        calls.append((kind, item))
        return getattr(world.pipeline.backfill, kind)(item)

    run_backfill(world.pipeline, workflows, run_id, child=child)
    # WHEN Step Functions runs every child again after their working objects were cleaned up (a redrive)
    world.bucket.backfill.clear()
    again = run_backfill(world.pipeline, workflows, run_id, seed=3)
    # THEN the state and messages are unchanged: the state items know the run
    assert state_view(world) == state_view(one)
    assert len(world.queues.bodies()) == len(one.queues.bodies())
    assert again["status"] == "succeeded"


@pytest.mark.slow  # a model call per shard
def test_a_hostile_range_fails_alone_and_is_named(tmp_path):
    # GIVEN a file whose second range, past the first 64 KiB, starts with a binary blob
    def rows(users: range) -> bytes:
        return "".join(f"u{i},2026-05-{1 + n % 28:02d}T10:00:00Z,login,\n" for i in users for n in range(60)).encode()

    blob = bytes(range(1, 256)).replace(b"\n", b"") * 400 + b"\n"
    head = b"user_id,event_time,event_type,value\n" + rows(range(0, 40))
    data = head + blob + rows(range(40, 50))
    world, workflows = backfill_world(data, shards=1, backfill_range_bytes=len(head) - 40)
    world.bucket.land(KEY, data)
    run_id = world.process(KEY)["run_id"]
    # WHEN the backfill runs
    summary = run_backfill(world.pipeline, workflows, run_id)
    # THEN the blob's range is refused alone and named; the other ranges' users are merged
    failed = summary["backfill"]["ranges_failed"]
    assert summary["status"] == "incomplete" and [f["range"] for f in failed] == [1], failed
    assert "binary" in failed[0]["why"] or "UTF-8" in failed[0]["why"]
    assert set(world.tables.states) >= {f"u{i}" for i in range(40)}
    assert world.tables.ledger[(KEY, world.bucket.open(KEY).etag)]["status"] == "incomplete"
    assert world.bucket.backfill, "an incomplete run keeps its working objects for a redrive"


@pytest.mark.slow  # a model call per shard and the single run to compare with
def test_a_range_of_bad_rows_is_rejected_with_the_original_line_numbers(few, tmp_path):
    # GIVEN a file whose last 300 rows are all bad, numbered as lines of the whole file
    good = file_bytes(few, tmp_path)
    n_lines = good.count(b"\n")
    bad = "".join(f"u{i},not-a-time,login,\n" for i in range(300))
    data = good + bad.encode()
    one, expected = single(data)
    world, workflows = backfill_world(data, ranges=6, shards=4)
    world.bucket.land(KEY, data)
    # WHEN it runs on the backfill
    summary = run_backfill(world.pipeline, workflows, world.process(KEY)["run_id"])
    # THEN the reject file is the one a single invocation writes: the same lines, the same reasons
    assert summary["rows"] == expected["rows"] and summary["rows"]["rejected"] == 300
    assert world.bucket.rejected[KEY] == one.bucket.rejected[KEY]
    assert world.bucket.rejected[KEY].splitlines()[1].startswith(f"{n_lines + 1},bad_event_time".encode())


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_range_boundaries_inside_quoted_fields_and_multibyte_characters_cut_no_row(few, tmp_path, crlf):
    # GIVEN a CSV whose rows carry a quoted multi-line note and multi-byte UTF-8 ids, LF or CRLF
    rows = ["user_id,event_time,event_type,value,note"]
    for i in range(40):
        note = '"line one\nline ""two""\nline three"' if i % 3 == 0 else "plain"
        rows.append(f"ü{i:04d}€用户,2026-05-{1 + i % 28:02d}T10:00:00Z,login,,{note}")
    text = "\n".join(rows) + "\n"
    data = (text.replace("\n", "\r\n") if crlf else text).encode()
    one, expected = single(data)
    # WHEN it is cut into ranges from 41 bytes up, at any offset inside a note or a character
    for size in (41, 601):
        world, workflows = backfill_world(data, shards=1, backfill_range_bytes=size)
        world.bucket.land(KEY, data)
        summary = run_backfill(world.pipeline, workflows, world.process(KEY)["run_id"])
        # THEN every row is read as one invocation reads it: nothing rejected, every user scored once
        assert summary["rows"] == expected["rows"] and summary["rows"]["rejected"] == 0, size
        assert state_view(world) == state_view(one), size


@pytest.mark.slow  # a model call per shard and the single run to compare with
def test_a_gzip_file_is_decompressed_once_into_ranges_and_gives_the_same_results(few, tmp_path):
    # GIVEN a gzip file
    plain = file_bytes(few, tmp_path)
    data = gzip.compress(plain, mtime=0)
    one, _ = single(data, "incoming/backfill.csv.gz")
    world, workflows = backfill_world(plain, ranges=4, shards=5)
    world.bucket.land("incoming/backfill.csv.gz", data)
    # WHEN it runs on the backfill
    summary = run_backfill(world.pipeline, workflows, world.process("incoming/backfill.csv.gz")["run_id"])
    # THEN its ranges were kept decompressed for the range children, and the results are one invocation's
    assert summary["status"] == "succeeded" and summary["backfill"]["ranges"] == 4
    assert state_view(world) == state_view(one) and risk_view(world) == risk_view(one)


def test_the_threshold_keeps_a_file_that_fits_and_routes_one_that_does_not(few, tmp_path):
    # GIVEN the derived threshold of a 2,048 MB function with 880 s to go
    data = file_bytes(few, tmp_path)
    limit = routing.threshold_bytes(SETTINGS, 900.0)
    assert limit == min(routing.memory_bound_bytes(SETTINGS.file_memory_budget_bytes), routing.time_bound_bytes(880.0))
    # WHEN a file one byte under it and one a byte over it land (the threshold set to straddle the file)
    for threshold, routed in ((len(data), False), (len(data) - 1, True)):
        workflows = FakeWorkflows()
        world = World(replace(SETTINGS, backfill_threshold_bytes=threshold), workflows=workflows)
        world.bucket.land(KEY, data)
        summary = world.process(KEY)
        # THEN only the larger goes to the state machine; the other is scored here
        assert (summary["status"] == routing.HANDED_OVER) is routed
        assert bool(workflows.executions) is routed and bool(world.tables.states) is not routed


def test_without_a_deployed_state_machine_a_large_file_is_processed_as_before(few, tmp_path):
    # GIVEN a threshold the file passes, but no backfill state machine for the stage
    data = file_bytes(few, tmp_path)
    world = World(replace(SETTINGS, backfill_threshold_bytes=1), workflows=FakeWorkflows(machines=("schedule",)))
    world.bucket.land(KEY, data)
    # WHEN it lands THEN it is scored in this invocation
    assert world.process(KEY)["status"] == "succeeded"


def test_a_gzip_file_is_routed_by_its_size_times_a_bounded_ratio():
    assert routing.estimated_bytes("a.csv.gz", 1000, 10**9) == 1000 * routing.GZIP_RATIO
    assert routing.estimated_bytes("a.csv.gz", 10**9, 5000) == 5000
    assert routing.estimated_bytes("a.csv", 1000, 5) == 1000


def test_cuts_number_each_range_from_its_first_line_in_the_file():
    data = b"\n\nuser_id,event_time,event_type\n" + b"".join(b"u%d,2026-01-01,login\n" % i for i in range(50))
    cuts = cut_file(io.BytesIO(data), "x.csv", 100, 1 << 20)
    assert cuts.prefix_lines == 3 and cuts.pieces[0].first_line == 4
    starts = [p.start for p in cuts.pieces]
    for piece in cuts.pieces:
        before = data[: piece.start]
        assert before.endswith(b"\n") and piece.first_line == before.count(b"\n") + 1
    assert sum(p.length for p in cuts.pieces) + len(cuts.prefix) == len(data) and starts == sorted(starts)


def test_the_execution_input_names_the_exact_object_version(few, tmp_path):
    data = file_bytes(few, tmp_path)
    world, workflows = backfill_world(data)
    world.bucket.land(KEY, data)
    run_id = world.process(KEY)["run_id"]
    job = workflows.executions[(BACKFILL, run_id)]
    assert job["key"] == KEY and job["size"] == len(data) and job["etag"] == world.bucket.open(KEY).etag


def started_backfill(data: bytes, **settings: Any) -> tuple[World, FakeWorkflows, dict[str, Any]]:
    """A world with the file landed, handed over and split; return it with the split's answer."""
    world, workflows = backfill_world(data, **settings)
    world.bucket.land(KEY, data)
    run_id = world.process(KEY)["run_id"]
    return world, workflows, world.pipeline.backfill.split(workflows.executions[(BACKFILL, run_id)])


def test_a_shard_waits_for_a_range_that_has_not_finished(few, tmp_path):
    # GIVEN a split backfill whose ranges have not run
    world, _, split = started_backfill(file_bytes(few, tmp_path), ranges=2, shards=2)
    # WHEN a shard child starts THEN it refuses with RangeNotReady (retried by the state machine) and writes nothing
    with pytest.raises(RangeNotReady, match="range 0 has not finished"):
        world.pipeline.backfill.shard({"run_id": split["run_id"], "shard": 0})
    assert not world.tables.states and not world.queues.bodies()


def test_a_shard_held_by_another_invocation_is_left_to_it(few, tmp_path):
    # GIVEN a backfill whose ranges ran, and shard 1's lease held by a live invocation (a Lambda retry's twin)
    world, _, split = started_backfill(file_bytes(few, tmp_path), ranges=2, shards=2)
    for r in range(split["ranges"]):
        world.pipeline.backfill.range({"run_id": split["run_id"], "range": r})
    world.tables.leases.take(f"{split['run_id']}.shard-00001", "other", world.now + 600, world.now)
    # WHEN the shard child runs THEN it raises ShardBusy for the state machine to retry, having done nothing
    with pytest.raises(ShardBusy):
        world.pipeline.backfill.shard({"run_id": split["run_id"], "shard": 1})
    assert not world.tables.states


def test_an_unusable_header_is_quarantined_by_the_finish_step_as_one_invocation_would(tmp_path):
    # GIVEN a file without the required columns, past the threshold
    data = b"name,when\n" + b"a,b\n" * 100
    world, workflows, split = started_backfill(data, ranges=2, shards=2)
    # WHEN the execution runs THEN the split plans nothing and finish quarantines the file with its reason
    assert split["ranges"] == 0
    summary = world.pipeline.backfill.finish({**workflows.executions[(BACKFILL, split["run_id"])], "split": split})
    assert summary["status"] == "unreadable" and KEY in world.bucket.quarantined
    assert world.tables.ledger[(KEY, _etag(data))]["status"] == "unreadable"


def test_a_failed_split_is_recorded_and_left_for_a_redrive(few, tmp_path):
    # GIVEN an execution whose split failed (the Catch put its error in the state)
    world, workflows = backfill_world(file_bytes(few, tmp_path))
    world.bucket.land(KEY, file_bytes(few, tmp_path))
    run_id = world.process(KEY)["run_id"]
    state = {**workflows.executions[(BACKFILL, run_id)], "split_error": {"Error": "Lambda.Unknown", "Cause": "OOM"}}
    # WHEN finish runs THEN the run record says so, and no ledger record stops a redrive from finishing the file
    summary = world.pipeline.backfill.finish(state)
    assert summary["status"] == "split_failed" and summary["error"]["error"] == "Lambda.Unknown"
    assert world.bucket.runs[run_id]["status"] == "split_failed" and not world.tables.ledger


def test_finish_run_again_after_the_run_finished_changes_nothing(tmp_path):
    # GIVEN a backfill that finished and deleted its working objects (here: a header-only file)
    world, workflows, split = started_backfill(b"user_id,event_time,event_type\n", shards=1, backfill_range_bytes=1000)
    state = {**workflows.executions[(BACKFILL, split["run_id"])], "split": split}
    first = world.pipeline.backfill.finish(state)
    # WHEN Step Functions retries the finish step (its answer was lost) THEN the record stays the finished one
    again = world.pipeline.backfill.finish(state)
    assert first["status"] == "succeeded" and not world.bucket.backfill
    assert again["status"] == world.bucket.runs[split["run_id"]]["status"] == "succeeded"


@pytest.mark.slow  # a model call per chunk
def test_a_shard_out_of_time_checkpoints_and_its_next_invocation_resumes(few, tmp_path):
    # GIVEN a backfill of one shard in chunks of ten users, each invocation with room for one chunk only
    data = file_bytes(few, tmp_path)
    one, _ = single(data)
    world, workflows, split = started_backfill(data, ranges=2, shards=1, chunk_users=10)
    for r in range(split["ranges"]):
        world.pipeline.backfill.range({"run_id": split["run_id"], "range": r})
    # WHEN the state machine retries RunInterrupted until the shard is done
    interrupted = 0
    while True:
        try:
            world.pipeline.backfill.shard({"run_id": split["run_id"], "shard": 0}, Deadline(lambda: 0.0, reserve=1.0))
            break
        except RunInterrupted:
            interrupted += 1
    summary = world.pipeline.backfill.finish({**workflows.executions[(BACKFILL, split["run_id"])], "split": split})
    # THEN every chunk ran once, in as many invocations, and the results are one invocation's
    assert interrupted == 2 and summary["chunks"] == 3
    assert state_view(world) == state_view(one) and risk_view(world) == risk_view(one)
    assert summary["users_new"] == len(few.user_ids)


def test_json_lines_are_cut_at_any_newline_with_no_header_prefix():
    lines = [b'{"user_id": "u%d", "event_time": "2026-01-01", "event_type": "login"}\n' % i for i in range(30)]
    data = b"\n" + b"".join(lines)
    cuts = cut_file(io.BytesIO(data), "x.jsonl", 150, 1 << 20)
    assert cuts.fmt == "jsonl" and cuts.prefix == b"" and cuts.pieces[0].first_line == 1
    assert b"".join(data[p.start : p.start + p.length] for p in cuts.pieces) == data
    assert all(data[: p.start].count(b"\n") + 1 == p.first_line for p in cuts.pieces)


def test_a_csv_line_that_leaves_a_quote_open_is_never_followed_by_a_cut():
    header = b"user_id,event_time,event_type,note\n"
    body = b'u1,2026-01-01,login,"opens\n' + b"still inside\n" * 5 + b'closes",x\n' + b"u2,2026-01-01,login,\n" * 5
    cuts = cut_file(io.BytesIO(header + body), "x.csv", 10, 1 << 20)
    starts = {p.start - len(header) for p in cuts.pieces}
    inside = body.index(b"still inside"), body.index(b'closes",x')
    assert not any(inside[0] <= s <= inside[1] for s in starts), starts
