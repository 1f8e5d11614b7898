"""Every metric the functions publish is added when its event happens, with the run's count as its value."""

from __future__ import annotations

import json

import pytest

from chalicelib.observability import COUNT, METRICS
from chalicelib.runs import file_run
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.ports import Sent
from chalicelib.runs.schedule_run import schedule_run_id
from churnguard_offline.generate import generate_events
from churnguard_offline.lambda_events import sqs_batch
from tests.unit.runs.test_runs_on_fakes import AS_OF, Recorder, World

KEY = "incoming/day.csv"
HEADER = b"user_id,event_time,event_type\n"
GOOD = b"u1,2026-05-01T00:00:00Z,login\nu2,2026-05-02T00:00:00Z,purchase\n"
BAD = b"u3,yesterday,login\n"


@pytest.fixture(scope="module")
def population():
    """Sixty users over a year: enough for messages to go out."""
    return generate_events(60, 365, 3, AS_OF)


def rows_rejected(world, population, tmp_path, monkeypatch):
    world.bucket.land(KEY, HEADER + GOOD + BAD * 3)
    world.process(KEY)
    return 3


def files_all_rows_rejected(world, population, tmp_path, monkeypatch):
    world.bucket.land(KEY, HEADER + BAD * 4)
    assert world.process(KEY)["status"] == "rejected"
    return 1


def file_attempts_failed(world, population, tmp_path, monkeypatch):
    world.bucket.land(KEY, HEADER + GOOD)

    def read_events(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(file_run, "read_events", read_events)
    for _ in range(2):
        with pytest.raises(MemoryError):
            world.process(KEY)
    return 1  # per attempt: two attempts, one each


def files_quarantined(world, population, tmp_path, monkeypatch):
    world.bucket.land(KEY, b"name,when,what\nu1,2026-05-01,login\n")
    assert world.process(KEY)["status"] == "unreadable"
    return 1


def runs_incomplete(world, population, tmp_path, monkeypatch):
    world.tables.fail_states = {"u1"}
    world.bucket.land(KEY, HEADER + GOOD)
    assert world.process(KEY)["status"] == "incomplete"
    return 1


def users_dead_lettered(world, population, tmp_path, monkeypatch):
    world.tables.fail_states = {"u1", "u2"}
    world.bucket.land(KEY, HEADER + GOOD)
    world.process(KEY)
    return 2


def messages_dead_lettered(world, population, tmp_path, monkeypatch):
    monkeypatch.setattr(world.queues, "send", lambda tier, messages: Sent(0, list(messages), []))
    world.land(KEY, population, tmp_path)
    summary = world.process(KEY)
    assert summary["dead_letter"]["messages"] > 0
    return summary["dead_letter"]["messages"]


def write_conflicts(world, population, tmp_path, monkeypatch):
    world.tables.race_states = {"u1", "u2"}
    world.bucket.land(KEY, HEADER + GOOD)
    world.process(KEY)
    return 2


def retries(world, population, tmp_path, monkeypatch):
    tables = world.tables
    real = tables.get_states

    def get_states(user_ids):
        tables.retries["BatchGetItem.UnprocessedKeys"] += 1  # the adapter retried part of the batch once
        return real(user_ids)

    monkeypatch.setattr(tables, "get_states", get_states)
    world.bucket.land(KEY, HEADER + GOOD)
    summary = world.process(KEY)
    assert summary["delivery"]["retries"] == {"BatchGetItem.UnprocessedKeys": tables.calls["get_states"]}
    return tables.calls["get_states"]


def schedule_users_not_covered(world, population, tmp_path, monkeypatch):
    world.land("incoming/all.csv", population, tmp_path)
    world.process("incoming/all.csv")
    at = AS_OF.timestamp() + 86400
    with pytest.raises(RunInterrupted):
        world.pipeline.run_schedule(at=at, deadline=Deadline(lambda: 1.0))
    return world.bucket.runs[schedule_run_id(at)]["cut_short"]["users_not_covered"]


def files_messages_dropped(world, population, tmp_path, monkeypatch):
    event = sqs_batch(["{not json", json.dumps({"Records": [{"eventSource": "aws:sns"}]})], ids=["m0", "m1"])
    assert world.pipeline.process_queue_batch(event, Deadline())["batchItemFailures"] == []
    return 1  # per message: two messages, one each


# What makes each metric happen, and the value it then has in one invocation's metrics.
SCENARIOS = {
    "RowsRejected": rows_rejected,
    "FilesAllRowsRejected": files_all_rows_rejected,
    "FileAttemptsFailed": file_attempts_failed,
    "FilesQuarantined": files_quarantined,
    "RunsIncomplete": runs_incomplete,
    "UsersDeadLettered": users_dead_lettered,
    "MessagesDeadLettered": messages_dead_lettered,
    "WriteConflicts": write_conflicts,
    "Retries": retries,
    "ScheduleUsersNotCovered": schedule_users_not_covered,
    "FilesMessagesDropped": files_messages_dropped,
}


def test_every_metric_published_has_a_scenario_here():
    assert set(SCENARIOS) == set(METRICS)


@pytest.mark.parametrize("name", METRICS)
def test_each_metric_is_added_when_its_event_happens(name, population, tmp_path, monkeypatch):
    # GIVEN a container whose metrics are recorded
    metrics = Recorder()
    world = World(metrics=metrics)
    # WHEN the metric's event happens
    expected = SCENARIOS[name](world, population, tmp_path, monkeypatch)
    # THEN the metric is added, counted, with the event's count as its value
    added = [kwargs for _, _, kwargs in metrics.calls if kwargs["name"] == name]
    assert added and all(a["unit"] == COUNT for a in added)
    assert {a["value"] for a in added} == {expected}


def test_a_clean_run_adds_no_metric(population, tmp_path):
    # GIVEN a clean file; WHEN it is processed, and delivered again
    metrics = Recorder()
    world = World(metrics=metrics)
    world.land(KEY, population, tmp_path)
    assert world.process(KEY)["status"] == "succeeded"
    assert world.process(KEY)["status"] == "duplicate"
    # THEN there is nothing to alarm on
    assert metrics.calls == []
