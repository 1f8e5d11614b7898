"""Closed exposures move into a day-by-day archive without one being lost or counted twice, whatever crashes."""

from __future__ import annotations

import random

import pytest

from chalicelib.retention.outcomes import HOLDOUT, TREATED, add_cells, distinct_exposures, lift_cells
from chalicelib.runs.closed_archive import ArchiveRaceError, archive_closed, closed_for_report
from tests.fakes import FakeBucket, FakeTables

DAY = 86400.0
AT = 1_790_000_000.0  # 2026-09-21
HORIZON = 30.0


def iso(t: float) -> str:
    from chalicelib.scoring.scorer import iso_time

    return iso_time(t)


def exposure(user: str, days_ago: float, returned_after: float | None, group: str = TREATED) -> dict:
    exposed = AT - days_ago * DAY
    return {
        "user_id": user,
        "exposed_at": iso(exposed),
        "group": group,
        "risk_tier": random.Random(user).choice(["high", "medium"]),
        "action": "winback_email",
        "returned_at": None if returned_after is None else iso(exposed + returned_after * DAY),
    }


def world(n_files: int = 40, seed: int = 3) -> tuple[FakeBucket, FakeTables, list[dict]]:
    """Return a bucket with files of closed exposures (some copies in two files, one still open on its item, one
    whose item cannot be read), the tables, and every exposure kept (copies included)."""
    rng = random.Random(seed)
    bucket, tables = FakeBucket(), FakeTables()
    every = []
    for f in range(n_files):
        found = []
        for k in range(rng.randint(1, 6)):
            user = f"u{f}-{k}"
            returned = rng.choice([None, rng.uniform(0, 60)])
            found.append(exposure(user, rng.uniform(0, 90), returned, rng.choice([TREATED, HOLDOUT])))
            # each user's current exposure is a newer one, so the closed one is final
            tables.risks[user] = {"user_id": user, "exposed_at": iso(AT)}
        bucket.closed_put(f"run-{f}", found)
        every += found
    # a copy of one exposure in a second file, which saw an earlier return (a redo, or a write that lost a race)
    twin = dict(every[0], returned_at=iso(AT - 200 * DAY))
    bucket.closed_put("run-twin", [twin])
    every.append(twin)
    # an exposure still open on its user's item (the write that replaces it has not landed), and an unread user
    still = exposure("open-user", 10, None)
    tables.risks["open-user"] = {"user_id": "open-user", "exposed_at": still["exposed_at"]}
    unread = exposure("unread-user", 20, 3)
    tables.risks["unread-user"] = {"user_id": "unread-user", "exposed_at": iso(AT)}
    tables.unread.add("unread-user")
    bucket.closed_put("run-open", [still, every[1]])
    bucket.closed_put("run-unread", [unread])
    every += [still, unread]
    return bucket, tables, every


def counted(bucket: FakeBucket, since: float | None = None) -> dict:
    """Return the lift cells a report makes of the closed exposures (none open: the test's items hold newer ones)."""
    closed, archived = closed_for_report(bucket, HORIZON, AT, since)
    return add_cells(lift_cells(distinct_exposures(closed), HORIZON, AT, since), archived)


def test_archiving_changes_no_count_and_keeps_what_may_still_change():
    # GIVEN files of closed exposures, the counts a report makes of them, and what they are counted from
    bucket, tables, every = world()
    before = counted(bucket)
    assert before == lift_cells(distinct_exposures(every), HORIZON, AT)
    files = len(bucket.closed)
    # WHEN they are archived
    done = archive_closed(bucket, tables, max_files=1000)
    # THEN the counts are the same, each exposure once with its earliest return
    assert counted(bucket) == before
    # AND the archive holds every final exposure by the day it was exposed; the files holding the open exposure
    # and the unread user's are kept, every other is gone
    archived = [e for day in bucket.archive_days() for e in bucket.archive_get(day)[0]]
    assert all(e["exposed_at"].startswith(day) for day in bucket.archive_days() for e in bucket.archive_get(day)[0])
    assert {e["user_id"] for e in archived} == {e["user_id"] for e in every} - {"open-user", "unread-user"}
    assert len(archived) == len({(e["user_id"], e["exposed_at"]) for e in archived})
    assert [e["returned_at"] for e in archived if e["user_id"] == every[0]["user_id"]] == [iso(AT - 200 * DAY)]
    assert sorted(run for run, _ in bucket.closed) == ["run-open", "run-unread"]
    assert done["files_read"] == files and done["files_deleted"] == files - 2 and done["exposures_kept"] == 2
    assert not done["files_left"]


def test_a_crash_between_archiving_and_deleting_counts_each_exposure_once_and_the_redo_finishes():
    # GIVEN files archived, then one of them written again, as after a crash before its delete (or a redo that
    # closed the same exposures again, with a return seen meanwhile)
    bucket, tables, every = world()
    before = counted(bucket)
    archive_closed(bucket, tables, max_files=1000)
    again = [dict(every[5]), dict(every[6])]
    bucket.closed_put("run-5", again)
    # THEN the report counts each once
    assert counted(bucket) == before
    # AND the next archiving deletes the file again, with nothing added twice
    archive_closed(bucket, tables, max_files=1000)
    assert sorted(run for run, _ in bucket.closed) == ["run-open", "run-unread"]
    assert counted(bucket) == before


def test_a_write_that_lost_a_race_reads_the_archive_again_and_loses_nothing(monkeypatch):
    # GIVEN another archiver that writes the same day between this one's read and write, twice
    bucket, tables, every = world()
    stranger = dict(every[2], user_id="stranger")  # exposed the same day as one of this archiver's
    day = stranger["exposed_at"][:10]
    put = bucket.archive_put
    races = iter([True, True])

    def racing_put(d, exposures, etag):
        if d == day and next(races, False):
            current, version = bucket.archive_get(d)
            assert put(d, distinct_exposures([*current, stranger]), version)
        return put(d, exposures, etag)

    monkeypatch.setattr(bucket, "archive_put", racing_put)
    # WHEN this one archives its files
    before = counted(bucket)
    archive_closed(bucket, tables, max_files=1000)
    # THEN both archivers' exposures are there, each once
    assert next(races, None) is None, "the other archiver came first twice"
    assert counted(bucket) == add_cells(before, lift_cells([stranger], HORIZON, AT))
    # AND an archive that changes under every write fails the step (its redo archives again), deleting nothing
    bucket2, tables2, _ = world()
    monkeypatch.setattr(bucket2, "archive_put", lambda d, exposures, etag: False)
    files = dict(bucket2.closed)
    with pytest.raises(ArchiveRaceError):
        archive_closed(bucket2, tables2, max_files=1000)
    assert bucket2.closed == files


def test_a_bounded_step_leaves_the_rest_for_the_next_and_the_counts_hold_between():
    # GIVEN more files than one step takes
    bucket, tables, _ = world(n_files=40)
    before = counted(bucket)
    # WHEN steps of 15 files run until none is left
    steps = []
    while True:
        steps.append(archive_closed(bucket, tables, max_files=15))
        # THEN after each, the counts are the same
        assert counted(bucket) == before
        if not steps[-1]["files_left"]:
            break
    assert [s["files_read"] for s in steps] == [15, 15, 13]
    assert sorted(run for run, _ in bucket.closed) == ["run-open", "run-unread"]


def test_a_report_since_a_day_reads_no_archive_of_an_earlier_day(monkeypatch):
    # GIVEN archived exposures over ninety days
    bucket, tables, every = world()
    archive_closed(bucket, tables, max_files=1000)
    since = AT - 30.5 * DAY
    read = []
    get = bucket.archive_get
    monkeypatch.setattr(bucket, "archive_get", lambda day: read.append(day) or get(day))
    # WHEN the report counts from a day and a half into a month ago
    got = counted(bucket, since)
    # THEN it counts what a report over every exposure counts from then, reading no earlier day
    assert got == lift_cells(distinct_exposures(every), HORIZON, AT, since)
    assert read and min(read) == iso(since)[:10]
