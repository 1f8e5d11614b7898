"""Time in the merge, on the fakes: a redo is recognised whatever came between, and each user is scored as of
their own time, never moved by another user's clock."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime

from chalicelib.ingest import read_events
from chalicelib.runs.records import Run
from chalicelib.scoring.scorer import iso_time
from chalicelib.scoring.state import build_state
from tests.unit.runs.test_runs_on_fakes import AS_OF, SETTINGS, World

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def _one_purchase(uid: str, at: float) -> bytes:
    return f"user_id,event_time,event_type,value\n{uid},{iso_time(at)},purchase,10\n".encode()


def _forget_the_run_finished(world: World, key: str) -> None:
    """Leave the state of a file's run merged but its ledger record unwritten, as a crash just before it does."""
    for ledger_key in [k for k in world.tables.ledger if k[0] == key]:
        del world.tables.ledger[ledger_key]
    world.bucket.runs.clear()


def _merge_other_runs(world: World, uid: str, n: int, every: float) -> None:
    """Merge `n` other runs' purchase of one user, `every` seconds apart, as a stream's files do (unscored)."""
    merger = world.pipeline.files.worker.merger
    delta = build_state(read_events(io.BytesIO(_one_purchase(uid, world.now)), "stream").events)
    for i in range(n):
        world.now += every
        run = Run(f"obj-stream-{i:04d}", f"s3://bucket/incoming/stream/{i:04d}.csv")
        merger.merge(run, delta.user_ids, delta.values, False, dict.fromkeys(delta.user_ids, world.now))
        assert not run.dead


def test_a_redo_a_day_after_1440_later_minute_files_does_not_merge_twice():
    # GIVEN a user's file whose run merged the user, then died before its ledger record
    world = World()
    world.bucket.land("incoming/first.csv", _one_purchase("u1", world.now - HOUR))
    assert world.process("incoming/first.csv")["status"] == "succeeded"
    _forget_the_run_finished(world, "incoming/first.csv")
    # AND a minute stream then brought the same user 1,440 more files, one a minute for a day
    _merge_other_runs(world, "u1", 1440, MINUTE)
    assert world.tables.events_of("u1") == 1441
    # WHEN the first file is redone a day after its first run (the schedule's sweep)
    world.now += HOUR
    redo = world.process("incoming/first.csv")
    # THEN the user's state holds its purchase once: 1,441 purchases stored for 1,441 sent
    assert redo["status"] == "succeeded" and redo["delivery"]["duplicates_suppressed"] == {"state": 1}
    assert world.tables.events_of("u1") == 1441


def _forty_users_one_skewed(landed_at: float) -> bytes:
    rows = [f"u{i:02d},{iso_time(landed_at - (i + 1) * HOUR)},login," for i in range(40)]
    rows[7] = f"u07,{iso_time(landed_at + 23 * HOUR)},login,"  # a device clock 23 h ahead: within the tolerance
    return ("user_id,event_time,event_type,value\n" + "\n".join(rows) + "\n").encode()


def test_one_users_skewed_event_moves_only_that_users_as_of():
    # GIVEN a file of 40 users, one of whom sent a row 23 h past the file's landing time
    world = World()
    landed = world.now
    world.bucket.land("incoming/skewed.csv", _forty_users_one_skewed(landed))
    # WHEN it is processed
    summary = world.process("incoming/skewed.csv")
    # THEN the other 39 are scored as of the landing time, and the skewed user as of their own latest event
    assert summary["status"] == "succeeded" and summary["users_scored"] == 40
    as_of = {uid: item["as_of"] for uid, item in world.tables.risks.items()}
    assert as_of.pop("u07") == iso_time(landed + 23 * HOUR)
    assert set(as_of.values()) == {iso_time(landed)} and len(as_of) == 39
    # AND every message says the as_of of its own user
    assert all(m["as_of"] == world.tables.risks[m["user_id"]]["as_of"] for m in world.queues.bodies())


def test_a_run_checkpointed_and_dead_lettered_keeps_each_users_own_as_of():
    # GIVEN the same file, chunked 10 users at a time, where the skewed user's risk write keeps failing
    world = World(replace(SETTINGS, chunk_users=10))
    landed = world.now
    world.bucket.land("incoming/skewed.csv", _forty_users_one_skewed(landed))
    world.tables.fail_risks = {"u07", "u03"}
    # WHEN it is processed, and replayed once the fault clears
    summary = world.process("incoming/skewed.csv")
    letters = {u["user_id"]: u["as_of"] for u in world.bucket.dead_letters[summary["run_id"]]["users"]}
    world.tables.fail_risks.clear()
    replayed = world.pipeline.replay(summary["run_id"])
    # THEN the dead letters kept each user's own as_of, and the replay scored each as of it
    assert summary["status"] == "incomplete" and letters == {"u07": landed + 23 * HOUR, "u03": landed}
    assert replayed["status"] == "replayed"
    assert world.tables.risks["u07"]["as_of"] == iso_time(landed + 23 * HOUR)
    assert world.tables.risks["u03"]["as_of"] == iso_time(landed)


def test_the_run_says_its_latest_as_of_and_how_many_users_were_scored_past_the_landing_time():
    world = World()
    landed = world.now
    world.bucket.land("incoming/skewed.csv", _forty_users_one_skewed(landed))
    summary = world.process("incoming/skewed.csv")
    assert summary["as_of"] == iso_time(landed + 23 * HOUR)
    assert summary["landed_at"] == iso_time(landed) and summary["users_as_of_past_landing"] == 1
    ledger = next(iter(world.tables.ledger.values()))
    assert ledger["as_of"] == summary["as_of"]


def test_as_of_is_the_landing_time_when_no_event_is_past_it():
    world = World()
    world.bucket.land("incoming/day.csv", _one_purchase("u1", datetime(2026, 5, 1, tzinfo=UTC).timestamp()))
    summary = world.process("incoming/day.csv")
    assert summary["as_of"] == iso_time(AS_OF.timestamp()) == world.tables.risks["u1"]["as_of"]
    assert summary["users_as_of_past_landing"] == 0


def test_a_file_whose_every_clock_is_ahead_is_scored_in_few_model_calls_each_user_just_past_their_own_event():
    # GIVEN 200 users each a different number of minutes ahead of the landing time (1 to 200)
    world = World(replace(SETTINGS, chunk_users=200))
    landed = world.now
    latest = {f"u{i:03d}": landed + (i + 1) * MINUTE for i in range(200)}
    rows = [f"{uid},{iso_time(at)},login," for uid, at in latest.items()]
    world.bucket.land("incoming/ahead.csv", ("user_id,event_time,event_type,value\n" + "\n".join(rows)).encode())
    score, calls = world.pipeline.ctx.scorer.score, []
    world.pipeline.ctx.scorer.score = lambda state, as_of: calls.append(as_of) or score(state, as_of)
    # WHEN it is processed
    summary = world.process("incoming/ahead.csv")
    # THEN each user is scored as of a time at or just past their own latest event (by less than an hour)
    for uid, at in latest.items():
        as_of = datetime.fromisoformat(world.tables.risks[uid]["as_of"]).timestamp()
        assert at <= as_of < at + HOUR, uid
    assert summary["users_scored"] == 200 and summary["users_as_of_past_landing"] == 200
    # AND the chunk took one model call per whole hour ahead, not one per user
    assert len(calls) == 4
