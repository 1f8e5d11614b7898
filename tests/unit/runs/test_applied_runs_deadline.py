"""The per-user list of merged runs, and the time budget that makes a run checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.runs import applied_runs
from chalicelib.runs.applied_runs import AppliedRuns
from chalicelib.runs.deadline import Deadline
from chalicelib.settings import ConfigError

DAY = 86400.0


def test_a_recorded_run_is_recognised_and_others_are_not():
    runs, _ = AppliedRuns().record("obj-a", 1000.0, max_age_seconds=DAY)
    assert runs.holds("obj-a")
    assert not runs.holds("obj-")  # a prefix of an id is another id
    assert not runs.holds("obj-b")


def test_the_list_keeps_every_run_within_the_age_bound_and_no_older_one():
    runs = AppliedRuns()
    for i in range(12):
        runs, _ = runs.record(f"run-{i}", 1000.0 + i * 3600, max_age_seconds=5 * 3600)
    # five hours back from the newest (run-11) reaches run-6
    assert [i for i in range(12) if runs.holds(f"run-{i}")] == list(range(6, 12)) and len(runs) == 6
    # recording a run again moves it to its new time instead of adding a second entry
    runs, _ = runs.record("run-6", 1000.0 + 12 * 3600, max_age_seconds=DAY)
    assert len(runs) == 6 and runs.entries["at"][-1] == 1000 + 12 * 3600


def test_two_days_of_a_minute_stream_all_fit_and_the_list_never_outgrows_its_bound():
    # GIVEN one run a minute for two days, with the default 48 h bound
    runs, start = AppliedRuns(), 1_780_000_000.0
    for i in range(2 * 1440):
        runs, overflow = runs.record(f"obj-{i}", start + 60 * i, max_age_seconds=2 * DAY)
        assert overflow == 0
    # THEN every one of them is still known, in 12 bytes each
    assert all(runs.holds(f"obj-{i}") for i in range(0, 2 * 1440, 97)) and runs.holds("obj-2879")
    assert len(runs.to_bytes()) == 2 * 1440 * applied_runs.ENTRY_BYTES == 34_560
    # AND past MAX_ENTRIES within the bound, the oldest go (and are counted) so the item stays bounded
    burst = [(applied_runs.digest(f"burst-{i}"), start + 2 * DAY) for i in range(applied_runs.MAX_ENTRIES)]
    full = AppliedRuns(np.array(burst, dtype=applied_runs.ENTRY))
    runs, overflow = full.record("one-more", start + 2 * DAY + 1, max_age_seconds=2 * DAY)
    assert len(runs) == applied_runs.MAX_ENTRIES and overflow == 1 and len(runs.to_bytes()) == applied_runs.MAX_BYTES
    assert runs.holds("one-more") and not runs.holds("burst-0") and runs.holds("burst-1")


def test_the_packed_list_reads_back_as_written():
    runs, _ = AppliedRuns().record("obj-a", 1000.0, max_age_seconds=DAY)
    runs, _ = runs.record("obj-b", 2000.0, max_age_seconds=DAY)
    again = AppliedRuns.load(runs.to_bytes())
    assert again.holds("obj-a") and again.holds("obj-b") and not again.holds("obj-c")
    assert AppliedRuns.load(runs.to_bytes() + b"\x01\x02").to_bytes() == runs.to_bytes()  # a torn tail is dropped
    assert len(AppliedRuns.load(None)) == len(AppliedRuns.load(b"")) == 0


def test_a_list_in_the_older_format_is_read_as_the_same_runs():
    # GIVEN an item written before the packed format: "run_id@epoch" strings, some malformed
    old = AppliedRuns.load(["garbage", "x@notatime", "y@nan", "obj-a@40", "sched-x@y@30"])
    # THEN its well-formed runs are known, the malformed ones dropped, and a new record keeps the old ones
    assert len(old) == 2 and old.holds("obj-a") and old.holds("sched-x@y") and not old.holds("garbage")
    runs, _ = old.record("obj-b", 50.0, max_age_seconds=DAY)
    assert runs.holds("obj-a") and runs.holds("obj-b") and list(runs.entries["at"]) == [30, 40, 50]


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
