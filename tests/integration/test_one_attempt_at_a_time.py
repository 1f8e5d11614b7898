"""Copies of one event at the same moment: one attempt at a time per run, so no message goes out twice.

S3 and EventBridge deliver an event at least once, and copies may run at the same time in different containers.
Copies share the run id, so without a lease each would read the other's pending message claims as its own redo and
send them again.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest

from chalicelib.aws.tables import BehaviourTables
from chalicelib.runs.file_run import object_run_id
from chalicelib.runs.schedule_run import schedule_run_id
from chalicelib.scoring.events import SECONDS_PER_DAY
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline

KEY = "incoming/a.csv"
LATER = AS_OF.timestamp() + 30 * SECONDS_PER_DAY


def at_once(calls: list) -> list[dict[str, Any]]:
    """Run the calls in threads released together; return their results in order."""
    start = threading.Barrier(len(calls))
    results: list[dict[str, Any]] = [{}] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def delivered_once(aws) -> list[dict[str, Any]]:
    """Drain every queue; assert no message id arrived twice; return the bodies."""
    bodies = aws.drain_all()
    twice = [mid for mid, n in Counter(b["message_id"] for b in bodies).items() if n > 1]
    assert bodies and not twice, f"{len(twice)} of {len(bodies)} messages delivered twice"
    return bodies


def assert_record_counts(aws, run_id: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The run record in runs/ counts exactly the messages that were delivered."""
    record = json.loads(aws.get(f"runs/{run_id}.json"))
    assert sum(record["messages_sent"].values()) == len(bodies)
    return record


def one_holder(summaries: list[dict[str, Any]]) -> None:
    """Exactly one copy did the run; the others found it running (or finished) and sent nothing."""
    statuses = Counter(s["status"] for s in summaries)
    assert statuses["succeeded"] == 1 and set(statuses) <= {"succeeded", "in_progress", "duplicate"}, statuses
    for s in summaries:
        if s["status"] == "in_progress":
            assert s["held_by"]["holder"] and s["held_by"]["until"]
            assert "messages_sent" not in s


@pytest.fixture
def landed(aws, population, tmp_path, no_sleep, chunks_of_fifty) -> str:
    """A file of eighty users (two chunks), landed; return its run id."""
    aws.land(KEY, csv_bytes(population.select(population.user_index < 80), tmp_path))
    etag = aws.s3.head_object(Bucket=aws.settings.behaviour_bucket, Key=KEY)["ETag"].strip('"')
    return object_run_id(aws.settings.behaviour_bucket, KEY, etag)


@pytest.fixture
def scored(aws, landed) -> str:
    """The file processed and its messages consumed, so a schedule a month later has users to message again."""
    make_pipeline(aws.settings).process_object(KEY, None, AS_OF.timestamp())
    aws.drain_all()
    return schedule_run_id(LATER)


@pytest.mark.parametrize("attempt", range(5))
def test_three_copies_of_a_file_event_at_once_send_each_message_once(aws, landed, attempt):
    # GIVEN three containers that get the same S3 event at the same moment
    pipelines = [make_pipeline(aws.settings) for _ in range(3)]
    # WHEN they process it at once
    summaries = at_once([lambda p=p: p.process_object(KEY, None, AS_OF.timestamp()) for p in pipelines])
    # THEN every message went out once, as the run record counts, and one of the copies did the run
    assert_record_counts(aws, landed, delivered_once(aws))
    one_holder(summaries)


def test_a_copy_of_a_file_event_arriving_during_the_send_phase_sends_nothing(aws, landed):
    # GIVEN a first delivery that is sending its first batch of messages when a copy of the event arrives
    first, copy = make_pipeline(aws.settings), make_pipeline(aws.settings)
    copies: list[dict[str, Any]] = []
    real_send = first.queues.send

    def send(tier, messages):
        if not copies:
            copies.append(copy.process_object(KEY, None, AS_OF.timestamp()))
        return real_send(tier, messages)

    first.queues.send = send
    # WHEN both finish
    summary = first.process_object(KEY, None, AS_OF.timestamp())
    # THEN every message went out once, as the run record counts: the copy left the run to the first delivery
    assert_record_counts(aws, landed, delivered_once(aws))
    assert summary["status"] == "succeeded" and copies[0]["status"] == "in_progress"


@pytest.mark.parametrize("attempt", range(5))
def test_three_copies_of_a_schedule_event_at_once_send_each_message_once(aws, scored, attempt):
    # GIVEN three containers that get the same schedule event at the same moment
    pipelines = [make_pipeline(aws.settings) for _ in range(3)]
    # WHEN they run it at once
    summaries = at_once([lambda p=p: p.run_schedule(LATER) for p in pipelines])
    # THEN every message went out once, as the run record counts, and one of the copies did the run
    assert_record_counts(aws, scored, delivered_once(aws))
    one_holder(summaries)


def test_a_copy_of_a_schedule_event_arriving_during_the_send_phase_sends_nothing(aws, scored):
    # GIVEN a scheduled run that is sending its first batch of messages when a copy of the event arrives
    first, copy = make_pipeline(aws.settings), make_pipeline(aws.settings)
    copies: list[dict[str, Any]] = []
    real_send = first.queues.send

    def send(tier, messages):
        if not copies:
            copies.append(copy.run_schedule(LATER))
        return real_send(tier, messages)

    first.queues.send = send
    # WHEN both finish
    summary = first.run_schedule(LATER)
    # THEN every message went out once, as the run record counts: the copy left the run to the first one
    assert_record_counts(aws, scored, delivered_once(aws))
    assert summary["status"] == "succeeded" and copies[0]["status"] == "in_progress"


def test_lease_items_are_never_read_as_users_even_where_state_and_risk_share_a_table(aws):
    # GIVEN a live run lease in the state table, and one in a table that holds both state and risk
    s = aws.settings
    separate = make_pipeline(s).tables
    shared = BehaviourTables(aws.ddb, s.risk_table, s.risk_table, 1, s.retention_seconds)
    now = AS_OF.timestamp()
    for tables in (separate, shared):
        assert tables.leases.take("obj-1", "holder", now + 60, now) is None
    assert len(aws.items(s.state_table, runs_own=True)) == len(aws.items(s.risk_table, runs_own=True)) == 1
    # WHEN the schedule's scan and the exposure scan (the lift report's) read the tables
    # THEN neither sees a user in them
    for tables in (separate, shared):
        pages = list(tables.scan_states(None, 10, as_of=now))
        assert [len(stored.batch) for stored, _ in pages] == [0] and pages[0][0].expired == 0
        assert tables.scan_exposures() == []
    # AND a release by its holder removes each
    for tables in (separate, shared):
        tables.leases.release("obj-1", "holder")
    assert aws.items(s.state_table, runs_own=True) == aws.items(s.risk_table, runs_own=True) == []
