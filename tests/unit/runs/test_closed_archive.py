"""Closed exposures move into a day-by-day archive without one being lost or counted twice, whatever crashes."""

from __future__ import annotations

import random

import pytest

from chalicelib.retention.outcomes import HOLDOUT, TREATED, add_cells, distinct_exposures, lift_cells
from chalicelib.runs.closed_archive import CLOSED_READ_BATCH, ArchiveRaceError, archive_closed, closed_for_report
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
    closed, archived = closed_for_report(bucket, HORIZON, AT, since, save=True)
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


def test_a_file_written_again_after_it_was_read_stays_and_its_newer_copy_counts():
    # GIVEN a file read by the archiver, written again by a redo (the same key: the same exposures, now with a
    # return seen meanwhile) whose risk write then lands, all before the archiver's risk reads
    bucket, tables = FakeBucket(), FakeTables()
    first = exposure("u", 40, None)
    bucket.closed_put("run-A", [first])
    tables.risks["u"] = {"user_id": "u", "exposed_at": first["exposed_at"]}
    redo = exposure("u", 40, 3)
    real = tables.get_risks

    def redo_lands_meanwhile(user_ids):
        bucket.closed_put("run-A", [redo])
        tables.risks["u"] = {"user_id": "u", "exposed_at": iso(AT - DAY)}
        return real(user_ids)

    tables.get_risks = redo_lands_meanwhile
    # WHEN the archiver archives what it read and deletes the file
    done = archive_closed(bucket, tables, max_files=100)
    # THEN the file, written again since, stays (S3 deletes only the version read), and the report counts the
    # user as come back, as the newer copy says
    assert done["files_written_again"] == 1 and bucket.closed
    tables.get_risks = real
    assert counted(bucket) == lift_cells([redo], HORIZON, AT)
    # AND the next archiving takes the newer copy
    archive_closed(bucket, tables, max_files=100)
    assert not bucket.closed and counted(bucket) == lift_cells([redo], HORIZON, AT)


def test_files_kept_back_do_not_stop_the_files_behind_them():
    # GIVEN two files listed first whose exposures stay open (a write that never landed, for a user never exposed
    # again), then three files of final exposures
    bucket, tables = FakeBucket(), FakeTables()
    for n in range(2):
        stuck = exposure(f"stuck-{n}", 20, None)
        tables.risks[stuck["user_id"]] = {"user_id": stuck["user_id"], "exposed_at": stuck["exposed_at"]}
        bucket.closed_put(f"run-0{n}", [stuck])
    for n in range(3):
        final = exposure(f"final-{n}", 20, None)
        tables.risks[final["user_id"]] = {"user_id": final["user_id"], "exposed_at": iso(AT)}
        bucket.closed_put(f"run-1{n}", [final])
    # WHEN each archiving may take no more files than are stuck, day after day
    done = [archive_closed(bucket, tables, max_files=2) for _ in range(4)]
    # THEN they take the files in turn, and the final ones are archived within a round
    assert sum(d["files_deleted"] for d in done) == 3
    assert sorted(run for run, _ in bucket.closed) == ["run-00", "run-01"]


def test_a_day_that_gains_nothing_is_not_written_again():
    # GIVEN a file kept back by one exposure still open, its other exposure archived
    bucket, tables = FakeBucket(), FakeTables()
    still, final = exposure("open", 10, None), exposure("final", 10, None)
    tables.risks["open"] = {"user_id": "open", "exposed_at": still["exposed_at"]}
    tables.risks["final"] = {"user_id": "final", "exposed_at": iso(AT)}
    bucket.closed_put("run-1", [still, final])
    archive_closed(bucket, tables, max_files=100)
    writes = bucket.archive_writes
    # WHEN the next schedules archive again, with nothing new
    done = [archive_closed(bucket, tables, max_files=100) for _ in range(3)]
    # THEN the day's object is not written again (each write would leave a noncurrent version behind)
    assert bucket.archive_writes == writes and [d["days_written"] for d in done] == [0, 0, 0]


def test_an_exposure_is_archived_under_its_utc_day_which_since_compares():
    # GIVEN an exposure whose time carries an offset: 2026-01-01T23:30-02:00 is 2026-01-02T01:30Z
    bucket, tables = FakeBucket(), FakeTables()
    e = dict(exposure("u", 0, None), exposed_at="2026-01-01T23:30:00-02:00")
    tables.risks["u"] = {"user_id": "u", "exposed_at": iso(AT)}
    bucket.closed_put("run-1", [e])
    since = 1767312000.0  # 2026-01-02T00:00:00Z
    before = counted(bucket, since)
    assert before != {}
    # WHEN it is archived, THEN it is under 2026-01-02, and a report since that day still counts it
    archive_closed(bucket, tables, max_files=100)
    assert bucket.archive_days() == ["2026-01-02"]
    assert counted(bucket, since) == before


def test_archiving_stops_reading_files_when_the_invocation_runs_short():
    # GIVEN more files than an invocation with little time left can read (they are read 256 at a time)
    bucket, tables, _ = world(n_files=600)
    before = counted(bucket)
    left = iter([300.0, 300.0] + [10.0] * 100)
    # WHEN it archives with two batches' worth of time
    done = archive_closed(bucket, tables, max_files=1000, seconds_left=lambda: next(left))
    # THEN it read two batches, left the rest for the next run (which starts after them), and no count moved
    assert done["files_read"] == 2 * CLOSED_READ_BATCH and done["files_left"]
    assert counted(bucket) == before
    remaining = len(bucket.closed)
    assert archive_closed(bucket, tables, max_files=1000)["files_read"] == remaining
    assert sorted(run for run, _ in bucket.closed) == ["run-open", "run-unread"]


def test_archiving_keeps_as_long_again_as_its_reads_took_for_the_deletes(monkeypatch):
    # GIVEN reads that take 100 s a batch, and an invocation with 400 s left
    bucket, tables, _ = world(n_files=600)
    clock = iter([0.0, 100.0, 200.0, 300.0])
    monkeypatch.setattr("chalicelib.runs.closed_archive.time.monotonic", lambda: next(clock))
    left = iter([400.0, 300.0, 200.0])
    # WHEN it archives
    done = archive_closed(bucket, tables, max_files=1000, seconds_left=lambda: next(left))
    # THEN the first look (400 s >= the 120 s reserve) and the second (300 >= 120 + 100 s of reads) read on, and
    # the third (200 < 120 + 200) stops: two batches
    assert done["files_read"] == 2 * CLOSED_READ_BATCH and done["files_left"]


@pytest.mark.parametrize("trouble", ["every_write_loses", "no_conditional_writes"])
def test_a_schedule_that_cannot_archive_still_finishes_and_reports_every_exposure(
    population, tmp_path, monkeypatch, caplog, trouble
):
    from chalicelib.runs.schedule_run import schedule_run_id
    from tests.unit.runs.test_run_completion import LATER, exposed_then_rescored
    from tests.unit.runs.test_runs_on_fakes import World

    # GIVEN the lift report of a schedule that re-exposes users and archives what it closed
    clean = World()
    exposed_then_rescored(clean, population, tmp_path)
    assert clean.bucket.archive and not clean.bucket.closed
    # AND the same schedule where every archive write loses a race, or where botocore makes no conditional writes
    world = World()
    if trouble == "every_write_loses":
        monkeypatch.setattr(world.bucket, "archive_put", lambda day, exposures, etag: False)
    else:
        world.bucket.conditional_writes = False
    # WHEN it runs
    exposed_then_rescored(world, population, tmp_path)
    # THEN it finishes, with its record and the same lift report, counting the files it could not archive
    assert world.bucket.runs[schedule_run_id(LATER)]["status"] == "succeeded"
    assert world.bucket.lift == clean.bucket.lift
    assert world.bucket.closed and not world.bucket.archive
    assert "closed exposures not archived" in caplog.text
