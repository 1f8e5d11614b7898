"""The schedule on its state machine, on fakes: the plan's segment list driven through the real steps in a loop.

The proof: a schedule over 8 segments, children in shuffled order, one killed mid-page and run again, scores every
user exactly once with the risk items and message ids of the single-invocation schedule, and a capped run claims
exactly the cap across all segments.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib.errors import InputError
from chalicelib.observability import SCHEDULE_USERS_NOT_COVERED
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.message_cap import SharedMessageCap
from chalicelib.runs.schedule_map import PartInProgress, part_id, plan_id, segment_count
from chalicelib.runs.schedule_run import schedule_run_id
from tests.fakes import FakeCaps, FakeWorkflows, scan_segment
from tests.unit.runs.test_runs_on_fakes import AS_OF, SETTINGS, Recorder, World, capped

KEY = "incoming/history.csv"
# Far enough after the file for silence to raise risk and the file run's cooldowns to have passed.
LATER = (AS_OF + timedelta(days=60)).timestamp()
SEGMENTS = 8
# Each segment of 120 users within reach: a table past it goes to the map, in 8 segments.
MAP_SETTINGS = replace(SETTINGS, schedule_invocation_users=16, schedule_max_concurrency=SEGMENTS)
# Volatile by design: when it was written, and how often (a redo writes an item once more).
VOLATILE = ("risk_version",)


class Killed(Exception):
    """The invocation died here (a timeout, out of memory): nothing after this call ran."""


def seeded(world: World, population, tmp_path) -> World:
    """Return the world with the population's history merged and scored by one file run."""
    world.land(KEY, population, tmp_path)
    assert world.process(KEY)["status"] == "succeeded"
    world.queues.sent = {dest: [] for dest in world.queues.sent}  # only the schedule's messages are compared
    return world


def map_world(**extra) -> World:
    """Return a world whose schedule state machine is deployed and whose table is past one invocation's reach."""
    world = World(MAP_SETTINGS, workflows=FakeWorkflows(), **extra)
    world.tables.warm_write_units = 1_000_000
    return world


def plan(world: World, at: float = LATER) -> list[dict]:
    """Run the plan step as the state machine does; return the items its map reads from the list it wrote."""
    out = world.pipeline.plan_schedule({"run_id": schedule_run_id(at), "at": at})
    return json.loads(world.bucket.map_items[out["segments_key"]])


def drive(world: World, items: list[dict], attempts: int = 3) -> list[int]:
    """Invoke each segment child as the map does (RunInterrupted: again), up to `attempts` failures; return the
    segments that failed every attempt."""
    failed = []
    for item in items:
        for _ in range(attempts):
            try:
                while True:
                    try:
                        world.pipeline.score_segment(item)
                        break
                    except RunInterrupted:
                        continue
                break
            except Killed:
                continue
        else:
            failed.append(item["segment"])
    return failed


def finish(world: World, at: float = LATER) -> dict:
    """Run the second map (the lift report's partial sums) over the planned segments, then the finish step."""
    planned = world.bucket.runs.get(plan_id(schedule_run_id(at)))
    for item in json.loads(world.bucket.map_items[planned["segments_key"]]) if planned else []:
        world.pipeline.score_segment({"phase": "lift", "item": item})
    return world.pipeline.finish_schedule({"run_id": schedule_run_id(at), "at": at})


def risks(world: World) -> dict[str, dict]:
    return {uid: {k: v for k, v in item.items() if k not in VOLATILE} for uid, item in world.tables.risks.items()}


def message_ids(world: World) -> list[str]:
    return sorted(m["message_id"] for m in world.queues.bodies())


def kill_once(world: World, on_call: int) -> None:
    """Make the `on_call`-th risk write land and then kill the invocation, before anything is sent or checkpointed."""
    real = world.tables.put_risks
    calls = {"n": 0}

    def put_risks(writes):
        calls["n"] += 1
        outcome = real(writes)
        if calls["n"] == on_call:
            raise Killed
        return outcome

    world.tables.put_risks = put_risks


def test_a_schedule_over_8_segments_gives_the_single_invocation_risk_items_and_messages(population, tmp_path):
    # GIVEN the same history in two worlds: one scheduled in one invocation, one through the map
    single = seeded(World(), population, tmp_path)
    single.pipeline.run_schedule(at=LATER)
    mapped = seeded(map_world(), population, tmp_path)
    items = plan(mapped)
    assert len(items) == SEGMENTS
    # WHEN the children run in shuffled order and one is killed mid-page, then invoked again
    random.Random(7).shuffle(items)
    kill_once(mapped, on_call=2)
    assert drive(mapped, items) == []
    summary = finish(mapped)
    # THEN every user was scored once, with the same risk items and the same messages, each sent once
    assert summary["status"] == "succeeded"
    assert risks(mapped) == risks(single)
    assert message_ids(mapped) == message_ids(single)
    assert len(set(message_ids(mapped))) == len(message_ids(mapped))
    single_record = single.bucket.runs[schedule_run_id(LATER)]
    assert summary["users_scored"] == single_record["users_scored"] == len(single.tables.states)
    assert summary["risk_tier"] == single_record["risk_tier"]
    # AND the lift report from the segments' partial sums is the single-invocation one, both having archived the
    # exposures they replaced
    single_lift = single.pipeline.lift_report(as_of=LATER)
    assert mapped.bucket.lift == single_lift
    assert mapped.bucket.archive == single.bucket.archive != {}
    assert not mapped.bucket.closed
    # AND nothing of the segments is left to resume
    assert not mapped.bucket.checkpoints


def test_a_capped_schedule_over_8_segments_claims_exactly_the_cap(population, tmp_path):
    # GIVEN a run cap below what the schedule would send, and children in shuffled order, one killed mid-page
    uncapped = seeded(World(), population, tmp_path)
    uncapped.pipeline.run_schedule(at=LATER)
    wanted = len(uncapped.queues.bodies())
    cap = wanted // 2
    assert cap >= 2
    world = capped(seeded(map_world(), population, tmp_path), cap)
    items = plan(world)
    random.Random(3).shuffle(items)
    kill_once(world, on_call=3)
    # WHEN the map runs every segment and finishes
    assert drive(world, items) == []
    summary = finish(world)
    # THEN exactly the cap was claimed and sent, each message once, and the counter says so
    sent = message_ids(world)
    assert len(sent) == len(set(sent)) == cap
    assert summary["messages_claimed"] == cap
    assert world.tables.caps.claimed(schedule_run_id(LATER)) == cap
    claims = [i for i in world.tables.risks.values() if i.get("contact_run_id") == schedule_run_id(LATER)]
    assert len(claims) == cap
    assert summary["suppressed"]["run_cap"] == wanted - cap


def test_two_copies_of_one_segment_at_once_leave_it_to_the_first(population, tmp_path):
    # GIVEN a segment child that is part-way through its segment
    world = seeded(map_world(), population, tmp_path)
    item = plan(world)[0]
    real = world.tables.get_risks
    second: dict = {}

    def get_risks(user_ids):
        if not second:
            # WHEN a second copy of the same child starts meanwhile
            with pytest.raises(PartInProgress) as raised:
                world.pipeline.score_segment(item)
            second["error"] = raised.value
        return real(user_ids)

    world.tables.get_risks = get_risks
    first = world.pipeline.score_segment(item)
    # THEN the second copy wrote nothing and raised for the state machine to retry; the first did the segment
    assert second["error"]
    assert first["status"] == "succeeded"
    members = [uid for uid in world.tables.states if scan_segment(uid, SEGMENTS) == 0]
    assert first["users_scored"] == len(members)
    assert world.pipeline.score_segment(item)["status"] == "duplicate"


def test_threads_racing_for_the_shared_counter_take_exactly_the_cap():
    # GIVEN one run's counter with a cap of 37 and 8 workers each wanting 20 messages
    store, cap, taken = FakeCaps(), 37, []
    lock = threading.Lock()

    def worker(w: int) -> None:
        budget = SharedMessageCap(store, "run", cap, f"seg-{w}")
        for i in range(20):
            body = {"user_id": f"u{w}-{i}", "message_id": f"m{w}-{i}"}
            if budget.allows({}, body):
                with lock:
                    taken.append(body["user_id"])

    # WHEN they race
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN exactly the cap was granted, and the counter says so
    assert len(taken) == len(set(taken)) == cap
    assert store.claimed("run") == cap


def test_a_chunk_redone_after_a_crash_reuses_its_grants_even_once_the_cap_is_reached():
    # GIVEN a chunk that took two grants, the last ones under the cap, and then died
    store = FakeCaps()
    first = SharedMessageCap(store, "run", 2, "seg-0")
    first.start_chunk(5)
    assert first.allows({}, {"user_id": "a", "message_id": "ma"})
    assert first.allows({}, {"user_id": "b", "message_id": "mb"})
    # WHEN its redo asks again, in a new invocation, after another user of the chunk
    redo = SharedMessageCap(store, "run", 2, "seg-0")
    redo.start_chunk(5)
    assert not redo.allows({}, {"user_id": "c", "message_id": "mc"})
    # THEN the redo gets the grants it took, and no more are taken
    assert redo.allows({}, {"user_id": "b", "message_id": "mb"})
    assert redo.allows({}, {"user_id": "a", "message_id": "ma"})
    assert store.claimed("run") == 2


def doom_segment(world, segment: int):
    """Make every attempt at one segment die reading its users' risk items; return its users and the real read."""
    doomed = {uid for uid in world.tables.states if scan_segment(uid, SEGMENTS) == segment}
    real = world.tables.get_risks

    def get_risks(user_ids):
        if doomed & set(user_ids) and len(user_ids) < 100:
            raise Killed
        return real(user_ids)

    world.tables.get_risks = get_risks
    return doomed, real


def test_a_segment_that_fails_every_time_makes_the_run_incomplete_and_names_its_users(population, tmp_path):
    # GIVEN a segment whose users' risk items can never be read (every attempt dies)
    metrics = Recorder()
    world = seeded(map_world(metrics=metrics), population, tmp_path)
    items = plan(world)
    doomed, real = doom_segment(world, 3)
    # WHEN the map runs every segment and finishes
    assert drive(world, items) == [3]
    summary = finish(world)
    # THEN the run is incomplete, names the segment and its users, and a metric says how many
    assert summary["status"] == "incomplete"
    assert summary["not_covered"]["segments"] == [3]
    assert summary["not_covered"]["users"] == len(doomed)
    run_id = schedule_run_id(LATER)
    left = {u["user_id"] for u in world.bucket.dead_letters[run_id]["users"]}
    assert left == doomed
    assert world.bucket.runs[run_id]["status"] == "incomplete"
    added = [kw for _, _, kw in metrics.calls if kw.get("name") == SCHEDULE_USERS_NOT_COVERED]
    assert [a["value"] for a in added] == [len(doomed)]
    # AND every other user was scored
    assert summary["users_scored"] == len(world.tables.states) - len(doomed)
    # AND once the segment can be read, replay finishes its users
    world.tables.get_risks = real
    replayed = world.pipeline.replay(run_id)
    assert replayed["status"] == "replayed"
    # (a re-score that changes nothing a consumer reads leaves the stored item as it was: counted as skipped)
    rewritten = doomed & {uid for uid, i in world.tables.risks.items() if i["run_id"] == run_id}
    assert len(doomed - rewritten) == replayed.get("risk_writes_skipped", 0)


def test_a_table_past_one_invocations_reach_is_handed_to_the_state_machine(population, tmp_path):
    # GIVEN a table whose item count is just past the reach of one invocation
    world = seeded(map_world(), population, tmp_path)
    world.tables.item_count = MAP_SETTINGS.schedule_invocation_users + 1
    before = risks(world)
    # WHEN the schedule fires
    summary = world.pipeline.run_schedule(at=LATER)
    # THEN it starts one execution named after the run id, records that, and scores nobody itself
    run_id = schedule_run_id(LATER)
    assert summary["status"] == "handed_over"
    assert world.pipeline.ctx.workflows.executions == {("schedule", run_id): {"run_id": run_id, "at": LATER}}
    assert world.bucket.runs[run_id]["status"] == "handed_over"
    assert risks(world) == before


def test_a_table_one_invocation_covers_stays_in_one_invocation(population, tmp_path):
    # GIVEN a table whose item count is exactly the reach of one invocation
    world = seeded(map_world(), population, tmp_path)
    world.tables.item_count = MAP_SETTINGS.schedule_invocation_users
    # WHEN the schedule fires
    summary = world.pipeline.run_schedule(at=LATER)
    # THEN it scores every user itself and starts nothing
    assert summary["status"] == "succeeded"
    assert summary["users_scored"] == len(world.tables.states)
    assert world.pipeline.ctx.workflows.executions == {}


def test_a_duplicate_schedule_event_starts_nothing(population, tmp_path):
    # GIVEN a schedule already handed over
    world = seeded(map_world(), population, tmp_path)
    world.pipeline.run_schedule(at=LATER)
    # WHEN the same event is delivered again
    again = world.pipeline.run_schedule(at=LATER)
    # THEN it starts no second execution and leaves the record as it was
    assert again["status"] == "duplicate"
    assert len(world.pipeline.ctx.workflows.executions) == 1
    assert world.bucket.runs[schedule_run_id(LATER)]["status"] == "handed_over"


def test_without_the_state_machine_a_schedule_cut_short_says_so_in_its_record_and_a_metric(population, tmp_path):
    # GIVEN no state machine, and invocations too short for more than one page
    metrics = Recorder()
    world = seeded(World(metrics=metrics), population, tmp_path)
    # WHEN the schedule runs out of time
    with pytest.raises(RunInterrupted):
        world.pipeline.run_schedule(at=LATER, deadline=Deadline(lambda: 1.0))
    # THEN its record says it stopped, with how many users it has not covered, and so does a metric
    record = world.bucket.runs[schedule_run_id(LATER)]
    assert record["status"] == "interrupted"
    not_covered = len(world.tables.states) - record["users_scored"] - record.get("expired_skipped", 0)
    assert record["cut_short"]["users_not_covered"] == not_covered > 0
    added = [kw for _, _, kw in metrics.calls if kw.get("name") == SCHEDULE_USERS_NOT_COVERED]
    assert [a["value"] for a in added] == [not_covered]


def test_a_repeated_plan_writes_the_same_segments_and_sweeps_once(population, tmp_path):
    # GIVEN a planned run
    world = seeded(map_world(), population, tmp_path)
    first = plan(world)
    # WHEN the plan step is invoked again (a retry of the state machine)
    again = plan(world)
    # THEN it gives the same segments
    assert again == first
    assert [i["segment"] for i in first] == list(range(SEGMENTS))


@pytest.mark.parametrize(
    ("items", "warm", "units", "expected"),
    [
        (0, None, 1.2, 1),
        (100, None, 1.2, 1),
        # 450 users a second at 1.2 write units each: 540 units a segment, 7 on a new table's 4,000
        (1_000_000, None, 1.2, 7),
        # a schedule measured at 0.5 units a user (it skips unchanged items): 17 segments on the same table
        (1_000_000, None, 0.5, 17),
        (1_000_000, 40_000, 1.2, 20),
        (10**8, 10**7, 1.2, 40),
    ],
)
def test_segments_fit_one_invocation_and_no_more_than_the_map_and_table_can_use(items, warm, units, expected):
    from chalicelib.runs.ports import TableStats

    settings = replace(SETTINGS, schedule_max_concurrency=40, schedule_users_per_second=450.0)
    assert segment_count(TableStats(items, warm), 50_000, settings, units) == expected


def test_a_plan_sizes_its_segments_by_what_the_last_schedule_of_the_same_model_wrote_per_user(population, tmp_path):
    # GIVEN a table wanting 30 segments of 4 users, a map taking 30 at once, on a table of 1,000 writes a second
    settings = replace(
        MAP_SETTINGS, schedule_invocation_users=4, schedule_max_concurrency=30, schedule_users_per_second=100.0
    )
    world = seeded(World(settings, workflows=FakeWorkflows()), population, tmp_path)
    world.tables.warm_write_units = 1_000
    # WHEN no schedule has measured its writes yet, THEN the plan assumes 1.2 a user: 1,000 // 120 = 8 segments
    assert len(plan(world)) == 8
    # WHEN a schedule of this model wrote 0.25 a user, THEN it is taken at the floor, 0.5: 1,000 // 50 = 20
    scorer = world.pipeline.ctx.scorer
    same = {"model_version": scorer.model.model_version, "playbook_version": scorer.playbook.version}
    world.bucket.schedule_writes = {"write_units_per_user": 0.25, **same}
    assert len(plan(world, LATER + 86400)) == 20
    # WHEN the measure is another model's or playbook's (either may rewrite every item), THEN the default again
    world.bucket.schedule_writes = {"write_units_per_user": 0.25, **same, "model_version": "another"}
    assert len(plan(world, LATER + 2 * 86400)) == 8
    world.bucket.schedule_writes = {"write_units_per_user": 0.25, **same, "playbook_version": "another"}
    assert len(plan(world, LATER + 3 * 86400)) == 8


def test_a_finished_schedule_keeps_what_it_wrote_per_user_for_the_next_plan(population, tmp_path):
    # GIVEN a schedule run to its end in one invocation
    world = seeded(World(), population, tmp_path)
    summary = world.pipeline.run_schedule(at=LATER)
    # THEN its risk writes and message marks per user are kept, under its model's version
    measured = world.bucket.schedule_writes
    written = summary["users_scored"] - summary["risk_writes_skipped"] + sum(summary["messages_sent"].values())
    assert measured["writes"] == written and measured["users_scored"] == summary["users_scored"]
    assert measured["write_units_per_user"] == round(written / summary["users_scored"], 4)
    assert measured["model_version"] == world.pipeline.ctx.scorer.model.model_version
    assert measured["playbook_version"] == world.pipeline.ctx.scorer.playbook.version
    # AND a map run's finish keeps its own
    mapped = seeded(map_world(), population, tmp_path)
    items = plan(mapped)
    assert drive(mapped, items) == []
    done = finish(mapped)
    assert mapped.bucket.schedule_writes["run_id"] == done["run_id"]
    assert mapped.bucket.schedule_writes["users_scored"] == done["users_scored"]


def test_part_ids_name_the_run_and_the_segment():
    assert part_id("sched-20260601T000000Z", 3, 8) == "sched-20260601T000000Z.seg-0003-of-0008"


@pytest.mark.parametrize("item", [{"segment": 8, "total_segments": 8}, {"segment": -1, "total_segments": 8}])
def test_an_item_that_is_no_segment_is_refused_before_anything_is_read(item):
    world = map_world()
    with pytest.raises(InputError, match="no segment"):
        world.pipeline.score_segment({"run_id": "sched-x", "at": LATER, **item})
    assert not world.bucket.runs and not world.tables.leases.taken


def test_a_plan_that_never_finished_makes_the_run_incomplete_for_every_user(population, tmp_path):
    # GIVEN a run whose plan step failed (the state machine caught it and went on to finish)
    metrics = Recorder()
    world = seeded(map_world(metrics=metrics), population, tmp_path)
    # WHEN finish runs
    summary = world.pipeline.finish_schedule({"run_id": schedule_run_id(LATER), "at": LATER, "plan_error": {}})
    # THEN the run is incomplete for every user, and says so in its record and a metric
    assert summary["status"] == "incomplete"
    assert summary["not_covered"]["users"] == len(world.tables.states)
    assert world.bucket.runs[schedule_run_id(LATER)]["errors"] == {"plan_error": {}}
    added = [kw for _, _, kw in metrics.calls if kw.get("name") == SCHEDULE_USERS_NOT_COVERED]
    assert [a["value"] for a in added] == [len(world.tables.states)]


def test_a_redo_of_an_incomplete_run_finishes_only_its_failed_segment(population, tmp_path):
    # GIVEN a run left incomplete by one segment that failed every attempt
    world = seeded(map_world(), population, tmp_path)
    items = plan(world)
    doomed, real = doom_segment(world, 5)
    assert drive(world, items) == [5]
    assert finish(world)["status"] == "incomplete"
    scored_before = {uid: i["risk_version"] for uid, i in world.tables.risks.items() if uid not in doomed}
    # WHEN the cause is fixed and a redo execution runs the same steps again
    world.tables.get_risks = real
    assert drive(world, plan(world)) == []
    summary = finish(world)
    # THEN the run succeeds, its users all scored, the finished segments untouched, nothing left to replay
    run_id = schedule_run_id(LATER)
    assert summary["status"] == "succeeded"
    assert summary["users_scored"] == len(world.tables.states)
    assert {uid: world.tables.risks[uid]["risk_version"] for uid in scored_before} == scored_before
    assert run_id not in world.bucket.dead_letters
    assert world.bucket.runs[run_id]["status"] == "succeeded"


def test_a_run_begun_in_one_invocation_is_finished_there_even_once_the_table_looks_past_its_reach(population, tmp_path):
    # GIVEN a schedule cut short in one invocation while the item count said one invocation covers it
    world = seeded(map_world(), population, tmp_path)
    world.tables.item_count = 1
    with pytest.raises(RunInterrupted):
        world.pipeline.run_schedule(at=LATER, deadline=Deadline(lambda: 1.0))
    # WHEN its retry finds DynamoDB's item count updated past the reach
    world.tables.item_count = 10_000
    summary = world.pipeline.run_schedule(at=LATER)
    # THEN it finishes from its checkpoint in one invocation, under one cap, and starts no execution
    assert summary["status"] == "succeeded"
    assert summary["users_scored"] == len(world.tables.states)
    assert world.pipeline.ctx.workflows.executions == {}


def test_a_replay_of_a_capped_map_run_takes_from_the_runs_counter_and_never_passes_the_cap(population, tmp_path):
    # GIVEN a capped map run that reached its cap while one segment's users could never be read
    uncapped = seeded(World(), population, tmp_path)
    uncapped.pipeline.run_schedule(at=LATER)
    messaged = {b["user_id"] for b in uncapped.queues.bodies()}
    world = map_world()
    seeded(world, population, tmp_path)
    # (the doomed segment is the one with the most users the uncapped schedule messages: the replay wants to send)
    segment = max(range(SEGMENTS), key=lambda s: sum(scan_segment(u, SEGMENTS) == s for u in messaged))
    cap = len(messaged) - sum(scan_segment(u, SEGMENTS) == segment for u in messaged)
    assert cap >= 2
    capped(world, cap)
    items = plan(world)
    doomed, real = doom_segment(world, segment)
    assert doomed & messaged
    assert drive(world, items) == [segment]
    summary = finish(world)
    run_id = schedule_run_id(LATER)
    assert summary["messages_claimed"] == cap == world.tables.caps.claimed(run_id)
    # WHEN the segment can be read again and the run is replayed
    world.tables.get_risks = real
    replayed = world.pipeline.replay(run_id)
    # THEN the replay finishes the users but claims nothing past the cap: every message is still the run's first cap
    assert replayed["status"] == "replayed"
    assert replayed.get("messages_claimed", 0) == 0
    assert replayed["suppressed"]["run_cap"] >= 1
    sent = message_ids(world)
    assert len(sent) == len(set(sent)) == cap
    assert world.tables.caps.claimed(run_id) == cap
