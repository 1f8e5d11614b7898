"""The run logic against in-memory ports: merges, staleness, claims, contact policy, exposures, dead letters,
checkpoints. No AWS, no moto: what lands is read straight from the fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.observability import COUNT
from chalicelib.retention.playbook import Playbook, load_playbook
from chalicelib.retry import Backoff
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.pipeline import ScoringPipeline
from chalicelib.scoring.artifact import MODEL_CACHE
from chalicelib.scoring.events import EventBatch
from chalicelib.scoring.scorer import Scorer
from chalicelib.settings import Settings
from churnguard_offline.generate import write_event_log
from tests.fakes import FakeBucket, FakeQueues, FakeTables

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
SETTINGS = Settings(
    behaviour_bucket="bucket",
    incoming_prefix="incoming/",
    risk_table="risk",
    state_table="state",
    queue_high="q-high",
    queue_medium="q-medium",
    chunk_users=40,
)


class World:
    """One container's pipeline over fakes, with a clock the test moves."""

    def __init__(self, settings: Settings = SETTINGS, **extra) -> None:
        self.now = AS_OF.timestamp()
        self.bucket = FakeBucket()
        self.tables = FakeTables(settings.retention_seconds)
        self.queues = FakeQueues(settings.queues)
        self.slept: list[float] = []
        self.pipeline = ScoringPipeline(
            settings,
            self.bucket,
            self.tables,
            self.queues,
            Scorer(MODEL_CACHE.get()),
            clock=lambda: self.now,
            backoff=Backoff(sleep=self.slept.append),
            **extra,
        )

    def land(self, key: str, batch: EventBatch, tmp_path) -> str:
        path = tmp_path / "events.csv"
        write_event_log(batch, path)
        return self.bucket.land(key, path.read_bytes())

    def process(self, key: str, **kwargs):
        return self.pipeline.process_object(key, landed_at=self.now, **kwargs)


def capped(world: World, cap: int) -> World:
    """Give the world's scorer a playbook whose run cap is `cap`."""
    spec = load_playbook(None).spec
    playbook = Playbook.from_spec(
        {**spec, "contact_policy": {**spec["contact_policy"], "max_messages_per_run": cap}}, "capped"
    )
    world.pipeline.ctx.scorer = Scorer(MODEL_CACHE.get(), playbook)
    return world


def test_a_landed_file_is_merged_scored_and_each_message_sent_once_and_marked(world, population, tmp_path):
    # GIVEN a file of 120 users
    world.land("incoming/day.csv", population, tmp_path)
    # WHEN it is processed
    summary = world.process("incoming/day.csv")
    # THEN every user has state and a risk item, and every claimed message went out once and is marked sent
    assert summary["status"] == "succeeded" and summary["chunks"] == 3
    assert set(world.tables.states) == set(world.tables.risks) == set(population.user_ids)
    sent = world.queues.bodies()
    assert sent and len({m["message_id"] for m in sent}) == len(sent) == summary["messages_claimed"]
    claims = {
        r["contact_message_id"]: r["contact_status"] for r in world.tables.risks.values() if "contact_status" in r
    }
    assert set(claims) == {m["message_id"] for m in sent} and set(claims.values()) == {"sent"}
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)


def test_a_redelivered_file_changes_nothing(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    first = world.process("incoming/day.csv")
    states = {u: s["version"] for u, s in world.tables.states.items()}
    # WHEN the same object's event comes again
    again = world.process("incoming/day.csv")
    # THEN it is a duplicate: no state written, no message sent
    assert again["status"] == "duplicate" and again["first_run"]["run_id"] == first["run_id"]
    assert {u: s["version"] for u, s in world.tables.states.items()} == states
    assert len(world.queues.bodies()) == first["messages_claimed"]


def test_a_stored_score_that_knows_more_is_never_replaced(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    uid = population.user_ids[0]
    newer = {**world.tables.risks[uid], "as_of": "2027-01-01T00:00:00Z", "scored_state_version": 99}
    world.tables.risks[uid] = newer
    # WHEN the schedule re-scores everyone at an older time
    summary = world.pipeline.run_schedule(at=AS_OF.timestamp() + 3600)
    # THEN the newer score stays, and the run says so
    assert world.tables.risks[uid]["as_of"] == "2027-01-01T00:00:00Z"
    assert summary["delivery"]["skipped_as_older"] == 1


def test_a_newer_time_with_older_state_is_scored_again_from_both(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    uid = population.user_ids[0]
    later = AS_OF + timedelta(days=3)
    world.tables.risks[uid]["as_of"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    world.tables.risks[uid]["scored_state_version"] = 0  # scored from older state than is stored
    summary = world.pipeline.run_schedule(at=AS_OF.timestamp() + 3600)
    assert summary["delivery"]["rescored_at_newer_as_of"] == 1
    item = world.tables.risks[uid]
    assert item["as_of"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert item["scored_state_version"] == world.tables.states[uid]["version"]


def test_within_the_cooldown_nobody_is_contacted_again(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    first = world.process("incoming/day.csv")
    world.now += 3600
    summary = world.pipeline.run_schedule(at=world.now)
    assert summary.get("messages_claimed", 0) == 0
    assert summary["suppressed"]["cooldown"] > 0
    assert len(world.queues.bodies()) == first["messages_claimed"]


def test_opted_out_users_get_no_message_and_no_action(world, population, tmp_path):
    world.bucket.opt_outs[SETTINGS.opt_out_key] = ("\n".join(["user_id", *population.user_ids]) + "\n").encode()
    world.land("incoming/day.csv", population, tmp_path)
    summary = world.process("incoming/day.csv")
    assert not world.queues.bodies() and summary["suppressed"]["opted_out"] > 0
    assert all(r["action"] == "" for r in world.tables.risks.values() if r["risk_tier"] != "low")


def test_holdout_users_are_exposed_as_the_control_group_and_get_nothing(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    sent = {m["user_id"] for m in world.queues.bodies()}
    held = [r for r in world.tables.risks.values() if r.get("exposure_group") == "holdout"]
    treated = [r for r in world.tables.risks.values() if r.get("exposure_group") == "treated"]
    assert held and all(r["holdout"] and r["user_id"] not in sent for r in held)
    assert {r["user_id"] for r in treated} == sent


def test_a_user_who_comes_back_after_an_exposure_is_counted_as_returned(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    exposed = [r["user_id"] for r in world.tables.risks.values() if "exposed_at" in r]
    back = population.select(population.user_index == population.user_ids.index(exposed[0]))
    back.time[:] = AS_OF.timestamp() + 86400  # their event a day after the exposure
    world.now += 2 * 86400
    world.land("incoming/later.csv", back.select(back.time > 0), tmp_path)
    world.process("incoming/later.csv")
    assert world.tables.risks[exposed[0]]["returned_at"] == (AS_OF + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_lost_write_races_are_read_again_and_merged_once(world, population, tmp_path):
    world.tables.race_states = set(population.user_ids[:5])
    world.land("incoming/day.csv", population, tmp_path)
    summary = world.process("incoming/day.csv")
    assert summary["status"] == "succeeded" and summary["delivery"]["write_conflicts"] == 5
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)
    assert len(world.slept) >= 1  # the retry waited through the pipeline's own backoff


def test_users_whose_writes_keep_failing_are_dead_lettered_and_replay_finishes_them(world, population, tmp_path):
    failing = set(population.user_ids[:3])
    world.tables.fail_states = set(failing)
    world.land("incoming/day.csv", population, tmp_path)
    summary = world.process("incoming/day.csv")
    assert summary["status"] == "incomplete" and summary["dead_letter"]["users"] == 3
    record = world.bucket.dead_letters[summary["run_id"]]
    assert {u["user_id"] for u in record["users"]} == failing and all(u["mode"] == "delta" for u in record["users"])
    # WHEN the fault clears and the run is replayed
    world.tables.fail_states.clear()
    replayed = world.pipeline.replay(summary["run_id"])
    # THEN those users are merged exactly once, and the run is done
    assert replayed["status"] == "replayed" and summary["run_id"] not in world.bucket.dead_letters
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)
    assert world.bucket.runs[summary["run_id"]]["status"] == "replayed"


def test_a_replay_claims_only_what_the_run_left_of_its_message_cap(population, tmp_path):
    # GIVEN a run capped at CAP messages that reached its cap while users it would message were dead-lettered
    probe = World()
    probe.land("incoming/day.csv", population, tmp_path)
    probe.process("incoming/day.csv")
    messaged = [b["user_id"] for b in probe.queues.bodies()]
    failing, cap = set(messaged[:10]), 5
    assert len(messaged) - len(failing) >= cap
    world = capped(World(), cap)
    world.tables.fail_states = set(failing)
    world.land("incoming/day.csv", population, tmp_path)
    summary = world.process("incoming/day.csv")
    assert summary["status"] == "incomplete" and summary["messages_claimed"] == cap
    # WHEN the fault clears and the run is replayed, twice over (the second finds nothing left)
    world.tables.fail_states.clear()
    replayed = world.pipeline.replay(summary["run_id"])
    # THEN the users are merged, but the replay sends nothing past the run's cap
    assert replayed["status"] == "replayed"
    assert replayed.get("messages_claimed", 0) == 0 and replayed["suppressed"]["run_cap"] >= 1
    assert len(world.queues.bodies()) == cap
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)


def test_messages_the_queue_keeps_refusing_are_dead_lettered_and_resent_by_replay(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    # plant a refusal of the first message this run will claim: process once on a copy to learn its id
    probe = World()
    probe.land("incoming/day.csv", population, tmp_path)
    first_id = probe.process("incoming/day.csv") and probe.queues.bodies()[0]["message_id"]
    world.queues.fail_ids = {first_id}
    summary = world.process("incoming/day.csv")
    assert summary["status"] == "incomplete" and summary["dead_letter"]["messages"] == 1
    world.queues.fail_ids.clear()
    replayed = world.pipeline.replay(summary["run_id"])
    assert replayed["status"] == "replayed"
    assert [m["message_id"] for m in world.queues.bodies()].count(first_id) == 1


def test_a_message_sqs_refuses_is_dead_lettered_alone_with_its_reason_and_never_resent(world, population, tmp_path):
    # GIVEN a run whose first claimed message SQS refuses for what it holds (learnt from a run on a copy)
    world.land("incoming/day.csv", population, tmp_path)
    probe = World()
    probe.land("incoming/day.csv", population, tmp_path)
    probe.process("incoming/day.csv")
    first_id = probe.queues.bodies()[0]["message_id"]
    world.queues.refuse_ids = {first_id: "InvalidMessageContents: Invalid characters found"}
    # WHEN the file is processed
    summary = world.process("incoming/day.csv")
    # THEN every other message goes once, and the refused one is dead-lettered alone with its reason
    sent = [m["message_id"] for m in world.queues.bodies()]
    assert sorted(sent) == sorted(m["message_id"] for m in probe.queues.bodies() if m["message_id"] != first_id)
    assert summary["status"] == "incomplete" and summary["delivery"]["messages_refused"] == 1
    [letter] = world.bucket.dead_letters[summary["run_id"]]["messages"]
    assert letter["body"]["message_id"] == first_id and letter["refused"].startswith("InvalidMessageContents")
    # AND a replay does not send it again (SQS would refuse the same body) but keeps it, with its reason
    world.queues.refuse_ids.clear()
    replayed = world.pipeline.replay(summary["run_id"])
    assert replayed["status"] == "incomplete" and replayed["delivery"]["messages_refused"] == 1
    assert sorted(m["message_id"] for m in world.queues.bodies()) == sorted(sent)
    assert world.bucket.dead_letters[summary["run_id"]]["messages"] == [letter]


def test_a_run_out_of_time_checkpoints_and_the_next_attempt_merges_the_rest_once(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    left = iter([100.0, 1.0])  # asked after the first and the second chunk: room for one more, then none
    deadline = Deadline(lambda: next(left), reserve=20.0, clock=lambda: 0.0)
    with pytest.raises(RunInterrupted):
        world.process("incoming/day.csv", deadline=deadline)
    (run_id,) = world.bucket.checkpoints
    assert world.bucket.checkpoints[run_id]["done"] == 2
    # WHEN the event is delivered again
    summary = world.process("incoming/day.csv")
    # THEN it resumes after the checkpoint and every event is merged once
    assert summary["status"] == "succeeded" and summary["resumed_after_chunks"] == 2
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)
    assert not world.bucket.checkpoints


def test_the_schedule_resumes_its_scan_after_the_last_page_it_finished(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    at = AS_OF.timestamp() + 30 * 86400
    left = iter([1.0])  # asked after the first page: the invocation is nearly over
    with pytest.raises(RunInterrupted):
        world.pipeline.run_schedule(at=at, deadline=Deadline(lambda: next(left), reserve=20.0, clock=lambda: 0.0))
    summary = world.pipeline.run_schedule(at=at)
    assert summary["status"] == "succeeded" and summary["resumed_after_chunks"] == 1
    # the totals carried over from the first attempt count every user once: no page scored twice
    assert summary["users_scored"] == len(population.user_ids)
    # each user's item is this run's, or the earlier one it would not have changed (its write skipped once)
    at_iso = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    written = sum(r["as_of"] == at_iso for r in world.tables.risks.values())
    assert written + summary["risk_writes_skipped"] == len(population.user_ids)


def test_users_whose_risk_items_cannot_be_read_are_dead_lettered_for_a_re_score_and_replayed(
    world, population, tmp_path
):
    # GIVEN a scored file, and three users whose items then stop coming back from BatchGetItem
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    stuck = set(population.user_ids[:3])
    before = {uid: dict(world.tables.risks[uid]) for uid in stuck}
    world.tables.unread = set(stuck)
    at = AS_OF.timestamp() + 30 * 86400
    # WHEN the schedule re-scores everyone
    summary = world.pipeline.run_schedule(at=at)
    # THEN it ends incomplete, those users kept to re-score and left untouched, everyone else re-scored
    assert summary["status"] == "incomplete" and summary["delivery"]["reads_failed"] == 3
    record = world.bucket.dead_letters[summary["run_id"]]
    assert {u["user_id"] for u in record["users"]} == stuck and {u["mode"] for u in record["users"]} == {"score"}
    assert {uid: world.tables.risks[uid] for uid in stuck} == before
    assert summary["users_scored"] == len(population.user_ids) - 3
    # WHEN the reads clear and the run is replayed THEN those users are scored as of the schedule's time
    world.tables.unread.clear()
    assert world.pipeline.replay(summary["run_id"])["status"] == "replayed"
    assert {world.tables.risks[uid]["as_of"] for uid in stuck} == {world.tables.risks[population.user_ids[5]]["as_of"]}


def test_a_second_schedule_event_for_the_same_time_does_nothing(world, population, tmp_path):
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    at = AS_OF.timestamp() + 86400
    world.pipeline.run_schedule(at=at)
    assert world.pipeline.run_schedule(at=at)["status"] == "duplicate"


def test_a_smaller_chunk_size_comes_from_the_settings(population, tmp_path):
    world = World(replace(SETTINGS, chunk_users=7))
    world.land("incoming/day.csv", population, tmp_path)
    assert world.process("incoming/day.csv")["chunks"] == -(-len(population.user_ids) // 7)


def test_every_user_on_an_opt_out_list_written_any_common_way_is_suppressed(population, tmp_path):
    # GIVEN users whose ids hold a line separator, a C1 control, a quote and an accent
    special = {0: "a\u2028b", 1: "a\x85b", 2: 'q"uote', 3: "café"}
    ids = [special.get(i, uid) for i, uid in enumerate(population.user_ids)]
    batch = replace(population, user_ids=ids)
    # AND an opt-out list saved with a BOM and CRLF, quoted, padded and plain ids, one per line
    lines = ['"a\u2028b"', "a\x85b  ", '"q""uote"', "  café", *ids[4:]]
    listed = ("\ufeffuser_id\r\n" + "\r\n".join(lines) + "\r\n").encode()
    control, world = World(), World()
    world.bucket.opt_outs[SETTINGS.opt_out_key] = listed
    for w in (control, world):
        w.land("incoming/day.csv", batch, tmp_path)
    # WHEN the file is processed with and without the list
    sent_without = {m["user_id"] for m in control.queues.bodies()} if control.process("incoming/day.csv") else set()
    summary = world.process("incoming/day.csv")
    # THEN without it the special users are messaged, and with it nobody is
    assert set(special.values()) & sent_without, "the special users must be actionable for the test to mean anything"
    assert world.queues.bodies() == [] and summary["suppressed"]["opted_out"] >= len(sent_without)


def test_a_run_whose_every_invocation_is_short_still_finishes_one_chunk_at_a_time(world, population, tmp_path):
    # GIVEN invocations that each leave room for the reserve and one 10-second chunk, not for two
    world.land("incoming/day.csv", population, tmp_path)

    def short_invocation() -> Deadline:
        ticks = iter(range(0, 1000, 10))
        return Deadline(lambda: 25.0, reserve=20.0, clock=lambda: float(next(ticks)))

    # WHEN the event is delivered until the run completes
    attempts = 0
    while True:
        attempts += 1
        try:
            summary = world.process("incoming/day.csv", deadline=short_invocation())
            break
        except RunInterrupted as stop:
            assert stop.done == attempts  # one more chunk each time: never "after 0 chunks" again
    # THEN each of the three chunks took one invocation and every event was merged once
    assert attempts == 3 and summary["status"] == "succeeded"
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)


def test_a_missed_file_that_fails_on_every_attempt_never_stops_the_schedule(world, population, tmp_path):
    # GIVEN known users, and a landed file whose trigger was missed and whose every read fails
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    world.bucket.land("incoming/poison.csv", b"user_id,event_time,event_type\n")
    world.bucket.unreadable.add("incoming/poison.csv")
    at = AS_OF.timestamp() + 7 * 86400
    # WHEN the schedule runs, twice (the file stays unprocessed, so the next sweep meets it again)
    for day in (0, 1):
        summary = world.pipeline.run_schedule(at=at + day * 86400)
        # THEN the file is reported as failed, and everyone is still re-scored
        assert summary["swept_files"] == [
            {"key": "incoming/poison.csv", "run_id": None, "status": "failed", "error": "OSError"}
        ]
        assert summary["status"] == "succeeded" and summary["users_scored"] == len(population.user_ids)


class Recorder:
    """Stands in for the logger and the metrics: keeps what was logged and added."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_a_file_whose_every_row_is_rejected_says_so_with_a_warning_and_a_metric(tmp_path):
    # GIVEN a file of 50 rows, none with a usable time
    logger, metrics = Recorder(), Recorder()
    world = World(logger=logger, metrics=metrics)
    world.bucket.land("incoming/bad.csv", b"user_id,event_time,event_type\n" + b"u1,yesterday,login\n" * 50)
    # WHEN it is processed
    summary = world.process("incoming/bad.csv")
    # THEN it ends with its own status, not "succeeded", and both the log and the metrics say so
    assert summary["status"] == "rejected" and summary["rows"] == {
        "read": 50,
        "scored": 0,
        "rejected": 50,
        "rejected_by_reason": {"bad_event_time": 50},
    }
    assert ("warning", ("every row rejected",)) in [(n, a) for n, a, _ in logger.calls]
    assert metrics.calls == [
        ("add_metric", (), {"name": "FilesAllRowsRejected", "unit": COUNT, "value": 1}),
        ("add_metric", (), {"name": "RowsRejected", "unit": COUNT, "value": 50}),
    ]
    assert world.tables.ledger.find("incoming/bad.csv", next(iter(world.tables.ledger))[1])["status"] == "rejected"
