"""A file's isolation boundary on fakes: failed attempts are counted, and after too many the file is quarantined;
hand-overs at checkpoints are progress, never failures."""

from __future__ import annotations

from dataclasses import replace

import pytest

from chalicelib.runs import file_run
from chalicelib.runs.attempts import KILLED
from chalicelib.runs.deadline import Deadline, RunInterrupted
from churnguard_offline.generate import generate_events
from tests.unit.runs.test_runs_on_fakes import AS_OF, SETTINGS, Recorder, World

KEY = "incoming/poison.csv"


class Killed(BaseException):
    """The runtime stops the process (an out-of-memory kill, a timeout): no except Exception clause runs."""


@pytest.fixture(scope="module")
def population():
    """Sixty users over a year."""
    return generate_events(60, 365, 3, AS_OF)


def _read_fails_for(monkeypatch, key: str, error: BaseException) -> None:
    """Make every read of `key` raise `error`, as a poison file's would; other files read as usual."""
    real = file_run.read_events

    def read_events(body, source, **kwargs):
        if source.endswith(key):
            raise error
        return real(body, source, **kwargs)

    monkeypatch.setattr(file_run, "read_events", read_events)


def test_a_file_that_fails_every_attempt_is_quarantined_by_the_attempt_after_the_limit(
    monkeypatch, population, tmp_path
):
    # GIVEN a file whose processing raises on every attempt, the error's text quoting a user id
    metrics = Recorder()
    world = World(replace(SETTINGS, max_file_attempts=3), metrics=metrics)
    etag = world.land(KEY, population, tmp_path)
    _read_fails_for(monkeypatch, KEY, ValueError("cannot parse row of user u-secret"))

    # WHEN it is attempted three times, each attempt raises (so Lambda retries it), and is counted
    for attempt in (1, 2, 3):
        with pytest.raises(ValueError):
            world.process(KEY)
        [record] = world.bucket.attempts.values()
        assert record["attempts"] == attempt and record["last_error"]["type"] == "ValueError"
    assert world.tables.ledger == {} and KEY not in world.bucket.quarantined

    # THEN the fourth attempt quarantines it instead of processing it, with the last error and a ledger record
    summary = world.process(KEY)
    assert summary["status"] == "quarantined" and summary["attempts"] == 3
    assert "ValueError" in summary["reason"] and "u-secret" not in summary["reason"]  # logs never quote the file
    reason = world.bucket.quarantined[KEY]
    assert reason["last_error"]["type"] == "ValueError" and "u-secret" in reason["last_error"]["detail"]
    assert world.tables.ledger[(KEY, etag)]["status"] == "quarantined"
    assert world.bucket.runs[summary["run_id"]]["status"] == "quarantined"
    assert world.bucket.attempts == {} and KEY not in world.bucket.objects
    added = [kwargs["name"] for _, _, kwargs in metrics.calls]
    assert added == ["FileAttemptsFailed"] * 3 + ["FilesQuarantined"]

    # AND the schedule's sweep treats the file as done
    assert world.pipeline.run_schedule(at=AS_OF.timestamp() + 86400)["swept_files"] == []


def test_the_schedule_sweeps_a_failing_file_until_it_is_quarantined_and_always_rescores_everyone(
    monkeypatch, population, tmp_path
):
    # GIVEN known users, and a landed file whose trigger never came and whose every read raises
    world = World(replace(SETTINGS, max_file_attempts=2))
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    world.land(KEY, population, tmp_path)
    _read_fails_for(monkeypatch, KEY, RecursionError("maximum recursion depth exceeded"))

    # WHEN the schedule runs on four days
    swept = []
    for day in range(1, 5):
        summary = world.pipeline.run_schedule(at=AS_OF.timestamp() + day * 86400)
        assert summary["status"] == "succeeded" and summary["users_scored"] == len(population.user_ids)
        swept.append([(s["status"], s.get("error")) for s in summary["swept_files"]])

    # THEN two sweeps fail on it, the third quarantines it, and the fourth finds nothing left to do
    assert swept == [[("failed", "RecursionError")], [("failed", "RecursionError")], [("quarantined", None)], []]
    assert "RecursionError" in world.bucket.quarantined[KEY]["reason"]


def test_an_attempt_killed_before_any_except_clause_runs_still_counts(monkeypatch, population, tmp_path):
    # GIVEN a file whose every attempt is killed from outside while it is read (out of memory)
    world = World(replace(SETTINGS, max_file_attempts=3))
    etag = world.land(KEY, population, tmp_path)
    _read_fails_for(monkeypatch, KEY, Killed())

    # WHEN it is killed three times (the count was written when each attempt started; nothing ran after)
    for attempt in (1, 2, 3):
        with pytest.raises(Killed):
            world.process(KEY)
        [record] = world.bucket.attempts.values()
        assert record["attempts"] == attempt and record["last_error"] is None

    # THEN the next attempt quarantines it, saying no error could be recorded
    summary = world.process(KEY)
    assert summary["status"] == "quarantined" and KILLED in summary["reason"]
    assert world.tables.ledger[(KEY, etag)]["status"] == "quarantined"


def test_a_long_file_handed_over_or_killed_after_progress_on_every_attempt_is_never_quarantined(
    monkeypatch, population, tmp_path
):
    # GIVEN a file of twelve chunks, and attempts that each do one chunk only: every other one hands over at its
    # checkpoint (RunInterrupted), the others are killed in their second chunk (after the first's checkpoint)
    world = World(replace(SETTINGS, chunk_users=5, max_file_attempts=1))
    world.land("incoming/long.csv", population, tmp_path)
    worker = world.pipeline.files.worker
    real = worker.merge_score_deliver
    chunks_this_attempt = []

    def merge_score_deliver(*args, **kwargs):
        chunks_this_attempt.append(1)
        if len(chunks_this_attempt) == 2:
            raise Killed()
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "merge_score_deliver", merge_score_deliver)

    # WHEN it is attempted until it finishes
    outcomes = []
    for attempt in range(1, 20):
        chunks_this_attempt.clear()
        one_chunk = Deadline(lambda: 0.0, reserve=0.0, clock=lambda: 0.0) if attempt % 2 else None
        try:
            summary = world.process("incoming/long.csv", deadline=one_chunk)
        except (RunInterrupted, Killed) as stopped:
            outcomes.append(type(stopped).__name__)
            continue
        break

    # THEN each attempt made progress, so none counted against the file: it finished, every user merged once
    assert outcomes == ["RunInterrupted", "Killed"] * 5 + ["RunInterrupted"]
    assert summary["status"] == "succeeded" and summary["chunks"] == 12 and summary["resumed_after_chunks"] == 11
    assert world.bucket.quarantined == {} and world.bucket.attempts == {}
    assert sum(world.tables.events_of(u) for u in population.user_ids) == len(population)
