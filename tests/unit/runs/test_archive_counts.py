"""A report reads only the archive's days still open: the settled ones' counts are saved, and right whatever
happens to them."""

from __future__ import annotations

import pytest

from chalicelib.retention.outcomes import add_cells, distinct_exposures, lift_cells
from chalicelib.runs.closed_archive import COUNTS_FORMAT, archive_closed, closed_for_report
from tests.fakes import FakeBucket
from tests.unit.runs.test_closed_archive import AT, DAY, HORIZON, counted, exposure, iso, world


def archived_world() -> FakeBucket:
    """Return a bucket whose closed exposures (0 to 90 days old, a 30-day horizon) are archived but for the few
    kept back (one still open, one whose item cannot be read)."""
    bucket, tables, _ = world(n_files=60)
    archive_closed(bucket, tables, max_files=1000)
    return bucket


def truth(bucket: FakeBucket, since: float | None = None, at: float = AT) -> dict:
    """Return the lift cells of every closed exposure, counted from scratch, each once."""
    archived = [e for exposures, _ in bucket.archive.values() for e in exposures]
    return lift_cells(distinct_exposures([*bucket.closed_all(), *archived]), HORIZON, at, since)


def report_at(bucket: FakeBucket, at: float, save: bool) -> dict:
    """Return the lift cells of a report as of `at`, which saves the settled days' counts when `save`."""
    closed, archived = closed_for_report(bucket, HORIZON, at, save=save)
    return add_cells(lift_cells(distinct_exposures(closed), HORIZON, at), archived)


def open_days(bucket: FakeBucket) -> set[str]:
    """Return the archive's days whose last exposure has not passed its horizon at AT."""
    return {day for day in bucket.archive if _day_start(day) + DAY + HORIZON * DAY > AT}


def read_each_time(bucket: FakeBucket) -> set[str]:
    """Return the archive's days every report reads: the open ones, and those a file of closed exposures also
    holds an exposure of (the world keeps one file back, its exposure still open)."""
    in_files = {e["exposed_at"][:10] for e in bucket.closed_all()}
    return open_days(bucket) | (in_files & set(bucket.archive))


def _day_start(day: str) -> float:
    from chalicelib.ingest import parse_timestamp

    return parse_timestamp(f"{day}T00:00:00Z")


def reads_of_a_report(bucket: FakeBucket, since: float | None = None) -> tuple[dict, int]:
    """Return a report's cells and how many days of the archive it read."""
    before = bucket.archive_reads
    cells = counted(bucket, since)
    return cells, bucket.archive_reads - before


def test_a_second_report_reads_only_the_open_days_and_counts_the_same():
    # GIVEN an archive of 90 days, of which the last 31 are open (their exposures' horizons have not passed)
    bucket = archived_world()
    days, still_open = len(bucket.archive), len(read_each_time(bucket))
    assert days > 60 and 0 < still_open < days
    # WHEN a report counts it, twice
    first, first_reads = reads_of_a_report(bucket)
    second, second_reads = reads_of_a_report(bucket)
    # THEN the first reads every day and saves the settled days' counts; the second reads only the open days
    assert first_reads == days and second_reads == still_open
    assert set(bucket.archive_counts[0]["days"]) == set(bucket.archive) - read_each_time(bucket)
    # AND both count every exposure once, as counting from scratch does
    assert first == second == truth(bucket)
    # AND a report that saves nothing new writes nothing
    writes = bucket.archive_counts_writes
    counted(bucket)
    assert bucket.archive_counts_writes == writes


def test_a_settled_day_that_gains_an_exposure_is_counted_again():
    # GIVEN saved counts, then an exposure of a settled day archived late (its file's run was slow)
    bucket = archived_world()
    counted(bucket)
    late = exposure("late-user", 60, None)
    day = late["exposed_at"][:10]
    current, version = bucket.archive_get(day)
    assert bucket.archive_put(day, [*current, late], version)
    # WHEN a report counts again, THEN it reads that day anew and the late exposure counts, once
    cells, reads = reads_of_a_report(bucket)
    assert reads == len(read_each_time(bucket)) + 1
    assert cells == truth(bucket)
    assert cells["all\x1fall"]["treated"]["lost"] == truth(bucket)["all\x1fall"]["treated"]["lost"]
    # AND the day's new counts are saved, so the next report reads only the open days again
    assert reads_of_a_report(bucket)[1] == len(read_each_time(bucket))


def test_a_day_that_leaves_the_archive_leaves_the_saved_counts():
    bucket = archived_world()
    counted(bucket)
    gone = min(bucket.archive)
    del bucket.archive[gone]
    assert counted(bucket) == truth(bucket)
    assert gone not in bucket.archive_counts[0]["days"]


def _valid(bucket: FakeBucket) -> dict:
    counted(bucket)
    return bucket.archive_counts[0]


def _bad_counts(bucket: FakeBucket, case: str) -> object:
    good = _valid(bucket)
    day = min(good["days"])
    cells = good["days"][day]["cells"]
    key = next(iter(cells))
    bad = {
        "not json": None,
        "a list": [good],
        "another layout": {**good, "format": COUNTS_FORMAT + 1},
        "another horizon": {**good, "horizon_days": HORIZON + 1},
        "days not a map": {**good, "days": [day]},
        "no version": {**good, "days": {day: {"cells": cells}}},
        "a group missing": {**good, "days": {day: {**good["days"][day], "cells": {key: {"treated": {}}}}}},
        "a negative count": {
            **good,
            "days": {
                day: {
                    **good["days"][day],
                    "cells": {key: {g: dict(r, lost=-5) for g, r in cells[key].items()}},
                }
            },
        },
        "a cell not named tier and action": {
            **good,
            "days": {day: {**good["days"][day], "cells": {"all": cells[key]}}},
        },
        "a count as text": {
            **good,
            "days": {day: {**good["days"][day], "cells": {key: {g: dict(r, lost="9") for g, r in cells[key].items()}}}},
        },
    }[case]
    return bad


@pytest.mark.parametrize(
    "case",
    [
        "not json",
        "a list",
        "another layout",
        "another horizon",
        "days not a map",
        "no version",
        "a group missing",
        "a negative count",
        "a cell not named tier and action",
        "a count as text",
    ],
)
def test_saved_counts_that_are_not_right_for_this_report_are_counted_anew_and_written_over(case):
    # GIVEN saved counts spoiled (a hand edit, a report of another horizon, an older layout)
    bucket = archived_world()
    bad = _bad_counts(bucket, case)
    bucket.archive_counts = (bad, bucket.archive_counts[1])
    # WHEN a report counts, THEN it counts right, and saves good counts over the spoiled ones
    assert counted(bucket) == truth(bucket)
    saved = bucket.archive_counts[0]
    assert saved["format"] == COUNTS_FORMAT and saved["horizon_days"] == HORIZON
    assert set(saved["days"]) == set(bucket.archive) - read_each_time(bucket)


def test_a_day_some_file_also_holds_is_read_and_its_counts_are_not_saved_until_the_file_goes():
    # GIVEN an archived exposure of a settled day whose file is still there (a crash between archive and delete)
    bucket = archived_world()
    e = next(e for exposures, _ in bucket.archive.values() for e in exposures if e["exposed_at"] < iso(AT - 40 * DAY))
    day = e["exposed_at"][:10]
    bucket.closed_put("run-crashed", [e])
    # WHEN reports count, THEN that day is read each time, the exposure counts once, and the day is not saved
    first, _ = reads_of_a_report(bucket)
    assert first == truth(bucket)
    assert day not in bucket.archive_counts[0]["days"]
    again, reads = reads_of_a_report(bucket)
    assert again == first and day in read_each_time(bucket) and reads == len(read_each_time(bucket))
    # AND once the file is gone, its day is saved like the others
    del bucket.closed[next(k for k in bucket.closed if "run-crashed" in k)]
    counted(bucket)
    assert day in bucket.archive_counts[0]["days"]


def test_a_report_since_a_day_reads_that_day_whole_each_time_and_takes_the_saved_later_ones():
    bucket = archived_world()
    counted(bucket)
    since = AT - 70.5 * DAY
    cells, reads = reads_of_a_report(bucket, since)
    assert cells == truth(bucket, since)
    assert reads == len(read_each_time(bucket)) + 1  # the since day: partly before `since`, never taken from the counts
    assert reads_of_a_report(bucket, since) == (cells, reads)


def test_a_report_that_loses_the_counts_write_to_another_still_counts_right(monkeypatch):
    bucket = archived_world()
    monkeypatch.setattr(bucket, "archive_counts_put", lambda counts, etag: False)
    assert counted(bucket) == truth(bucket)
    assert bucket.archive_counts is None
    assert reads_of_a_report(bucket)[1] == len(bucket.archive)  # nothing saved: every day read again


def test_without_conditional_writes_no_counts_are_saved_and_the_report_is_right():
    bucket = archived_world()
    bucket.conditional_writes = False
    assert counted(bucket) == truth(bucket)
    assert bucket.archive_counts is None


def test_two_reports_at_once_cannot_save_counts_over_each_other():
    # GIVEN two reports that read the saved counts' same version
    bucket = archived_world()
    counted(bucket)
    saved, version = bucket.archive_counts_get()
    # WHEN one of them saves first, THEN the other's write over the same version loses
    assert bucket.archive_counts_put(saved, version)
    assert not bucket.archive_counts_put(saved, version)


def test_the_counts_a_report_saves_are_exactly_each_settled_days_own():
    bucket = archived_world()
    counted(bucket)
    for day, entry in bucket.archive_counts[0]["days"].items():
        exposures, version = bucket.archive[day]
        assert entry["version"] == str(version)
        assert entry["cells"] == lift_cells(exposures, HORIZON, AT)
    total = {}
    for entry in bucket.archive_counts[0]["days"].values():
        add_cells(total, entry["cells"])
    assert all(groups[g]["pending"] == 0 for groups in total.values() for g in groups)
    _, archived = closed_for_report(bucket, HORIZON, AT)
    assert archived  # the report's archived cells include them


def test_counts_saved_earlier_hold_as_time_passes_and_open_days_settle():
    # GIVEN counts saved by a report at AT, with days still open (exposures pending)
    bucket = archived_world()
    counted(bucket)
    assert truth(bucket)["all\x1fall"]["treated"]["pending"] > 0
    # WHEN a report counts 40 days later, when every exposure has passed its horizon
    later = AT + 40 * DAY
    closed, archived = closed_for_report(bucket, HORIZON, later, save=True)
    cells = add_cells(lift_cells(distinct_exposures(closed), HORIZON, later), archived)
    # THEN it counts as counting from scratch then does: the pending ones are now lost or returned
    archived_all = [e for exposures, _ in bucket.archive.values() for e in exposures]
    want = lift_cells(distinct_exposures([*bucket.closed_all(), *archived_all]), HORIZON, later)
    assert cells == want and all(g["pending"] == 0 for groups in want.values() for g in groups.values())
    # AND every day whose exposures no file holds is saved now
    in_files = {e["exposed_at"][:10] for e in bucket.closed_all()}
    assert set(bucket.archive_counts[0]["days"]) == set(bucket.archive) - in_files


@pytest.mark.parametrize("save", [True, False])
def test_counts_saved_later_are_not_taken_by_a_report_as_of_an_earlier_date(save):
    # GIVEN counts saved by a report 40 days ahead (a `report --as-of` in the future, or the newer of two runs),
    # when every day is settled
    bucket = archived_world()
    report_at(bucket, AT + 40 * DAY, save=True)
    # WHEN reports count as of AT, and 20 days before, THEN each counts as counting from scratch then does: a day
    # not settled at its date is read, its exposures pending, whatever the saved counts say
    for at in (AT, AT - 20 * DAY):
        assert report_at(bucket, at, save) == truth(bucket, at=at)


def test_a_report_that_does_not_save_takes_the_saved_counts_and_writes_none():
    # GIVEN counts a schedule saved; WHEN a report on demand counts (`report`, perhaps with read-only credentials)
    bucket = archived_world()
    counted(bucket)
    writes, reads = bucket.archive_counts_writes, bucket.archive_reads
    bucket.archive_counts_put = None  # a write would fail: this report must not make one
    # THEN it reads only the days still open, counts right, and writes nothing, even 40 days later
    assert report_at(bucket, AT, save=False) == truth(bucket)
    assert bucket.archive_reads - reads == len(read_each_time(bucket))
    assert report_at(bucket, AT + 40 * DAY, save=False) == truth(bucket, at=AT + 40 * DAY)
    assert bucket.archive_counts_writes == writes
