"""The per-user list of merged runs, and the time budget that makes a run checkpoint."""

from __future__ import annotations

import pytest

from chalicelib.runs import applied_runs
from chalicelib.runs.deadline import Deadline
from chalicelib.settings import ConfigError

DAY = 86400.0


def test_a_recorded_run_is_recognised_and_others_are_not():
    entries = applied_runs.record([], "obj-a", 1000.0, keep=8, max_age_seconds=DAY)
    assert applied_runs.was_applied(entries, "obj-a")
    assert not applied_runs.was_applied(entries, "obj-")  # a prefix of an id is another id
    assert not applied_runs.was_applied(entries, "obj-b")


def test_the_list_keeps_the_newest_entries_within_the_age_limit():
    entries: list[str] = []
    for i in range(12):
        entries = applied_runs.record(entries, f"run-{i}", 1000.0 + i * 3600, keep=8, max_age_seconds=5 * 3600)
    # five hours back from the newest (run-11) reaches run-6; the cap of eight does not bind
    assert [e.split("@")[0] for e in entries] == [f"run-{i}" for i in range(6, 12)]
    entries = applied_runs.record(entries, "run-11", 1000.0 + 11 * 3600, keep=3, max_age_seconds=DAY)
    assert [e.split("@")[0] for e in entries] == ["run-9", "run-10", "run-11"]


def test_malformed_entries_are_dropped():
    entries = applied_runs.record(["garbage", "x@notatime", "ok@40"], "run", 50.0, keep=8, max_age_seconds=DAY)
    assert entries == ["ok@40", "run@50"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_without_a_context_there_is_always_room():
    assert Deadline.from_lambda_context(object()).room_for_another()


def test_a_run_stops_when_the_next_chunk_would_eat_into_the_reserve():
    clock = Clock()
    budget = 100.0
    deadline = Deadline(lambda: budget - clock.now, reserve=20.0, clock=clock)
    assert deadline.room_for_another()
    deadline.start_chunk()
    clock.now = 30.0  # a chunk took 30 s; 70 s left, and 20 + 1.5 * 30 = 65 s are needed
    deadline.end_chunk()
    assert deadline.room_for_another()
    deadline.start_chunk()
    clock.now = 40.0  # 60 s left: not enough for another 30-second chunk and the reserve
    deadline.end_chunk()
    assert not deadline.room_for_another()


def test_a_lambda_context_gives_the_time_left():
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 10_000

    assert Deadline.from_lambda_context(Context(), reserve=5.0).room_for_another()
    with pytest.raises(ConfigError, match="CHECKPOINT_RESERVE_SECONDS=20"):
        Deadline.from_lambda_context(Context(), reserve=20.0).room_for_another()


def test_every_invocation_does_at_least_one_chunk_however_long_the_last_one_took():
    # GIVEN an invocation with 30 s left and a 20 s reserve: room for the reserve, not for 1.5 chunks of 30 s
    clock = Clock()
    deadline = Deadline(lambda: 30.0 - clock.now, reserve=20.0, clock=clock)
    deadline.longest_chunk = 30.0  # as a checkpoint of an earlier attempt might suggest
    # THEN its first chunk still runs, and only after it does the deadline stop the run
    assert deadline.room_for_another()
    deadline.start_chunk()
    clock.now = 5.0
    deadline.end_chunk()
    assert not deadline.room_for_another()
