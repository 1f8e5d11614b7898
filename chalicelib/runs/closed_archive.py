"""Closed exposures, archived: one object a day of exposure instead of one a chunk that ever closed one.

A run keeps the exposures it replaces in outcomes/closed/ before the writes that replace them (runs/chunk.py), one
file a chunk. Every lift report reads them all, and checks each one's user for an open copy: left alone, that is a
GET a file and a read a user, more every day, until the report outgrows its invocation. Once no risk item holds an
exposure any more (the write that replaced it has landed), nothing about it changes again: it is final.
`archive_closed` moves final exposures into outcomes/archive/<day>.json, by the day they were exposed, and deletes
the files whose exposures are all archived; `closed_for_report` reads what is left of the files, then the archive,
whose settled days it counts once and saves (runs/_closed-archive-counts.json), so a report reads one horizon of it.

Safe at every step, whatever crashes or runs at the same time:
- an exposure is archived before its file is deleted, and a redo archives it again to the same effect;
- a day's archive is rewritten only over the version read (S3's If-Match, or If-None-Match for a new day), so two
  archivers never lose each other's exposures;
- a reader reads the files before the archive, so one deleted in between is in the archive it reads next, and it
  takes each exposure once, by its identity, wherever it finds it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from chalicelib.errors import RetryableError
from chalicelib.ingest import parse_timestamp
from chalicelib.retention.outcomes import (
    CELL_SEP,
    HOLDOUT,
    OUTCOMES,
    TREATED,
    Cells,
    add_cells,
    distinct_exposures,
    identity,
    lift_cells,
)
from chalicelib.runs.context import RunContext
from chalicelib.runs.ports import CLOSED_READ_BATCH, Bucket, ClosedFile, Listed, Tables
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.scorer import iso_time

# The layout of the saved counts of settled days; counts of another layout, or another horizon, are counted anew.
COUNTS_FORMAT = 1
# Rounds of re-reading a day's archive after another write came first, before the step fails (and is redone).
ARCHIVE_WRITE_ROUNDS = 5
# The archiving reads no further file once its invocation has less than this left, besides as long again as its
# reads took (for the deletes): the merges, the lift report and the run record come after it.
ARCHIVE_RESERVE_SECONDS = 120.0


class ArchiveRaceError(RetryableError):
    """A day's archive kept changing under this write: the files stay, for the next run to archive."""


def exposure_day(exposure: dict[str, Any]) -> str | None:
    """Return the UTC day (YYYY-MM-DD) an exposure was made, as `since` compares it; None when it does not parse."""
    try:
        return iso_time(parse_timestamp(str(exposure["exposed_at"])))[:10]
    except ValueError:
        return None


def archive_for_run(
    ctx: RunContext, run_id: str, seconds_left: Callable[[], float] | None = None
) -> dict[str, Any] | None:
    """Archive what the schedule's day closed (`CLOSED_ARCHIVE_FILES` files at most) and log what it did.

    The counts go to the log, not the run record: a redo after a crash finds the files already archived, and its
    record stays the clean run's. Archiving is housekeeping: where it cannot be done (a botocore too old for
    conditional writes) or keeps losing races, the run goes on, and its report counts the files still there. An
    error S3 gives after botocore's own retries (access denied, say) fails the run as any other call's would.
    """
    if not ctx.bucket.makes_conditional_writes():
        ctx.logger.warning(
            "closed exposures not archived",
            extra={"run_id": run_id, "why": "this botocore makes no conditional writes"},
        )
        return None
    try:
        done = archive_closed(ctx.bucket, ctx.tables, ctx.settings.closed_archive_files, seconds_left)
    except ArchiveRaceError as exc:  # a day that kept changing: the next run tries again
        ctx.logger.warning("closed exposures not archived", extra={"run_id": run_id, "why": str(exc)})
        return None
    extra = {"run_id": run_id, **done}
    if done["files_left"]:
        ctx.logger.warning("closed exposures left to archive", extra=extra)
    else:
        ctx.logger.info("closed exposures archived", extra=extra)
    return done


def archive_closed(
    bucket: Bucket, tables: Tables, max_files: int, seconds_left: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Archive the final exposures of up to `max_files` files of closed exposures; delete the files so archived.

    Files are taken in turn, from where the last archiving stopped, so files kept back (an exposure still open)
    never stop the ones behind them. Returns counts: files read, deleted, kept back and written again since read;
    exposures archived and kept; days written; and whether files were left for the next run.
    """
    started_at = cursor = bucket.archive_cursor_get()
    listed = [item.key for item in islice(_in_turn(bucket, cursor), max_files + 1)]
    files: list[ClosedFile] = []
    taken, reading, clock = 0, 0.0, time.monotonic()
    for at in range(0, min(len(listed), max_files), CLOSED_READ_BATCH):
        # The deletes after take about as long as the reads: keep room for them, and the reserve, before a batch.
        if seconds_left is not None and seconds_left() < ARCHIVE_RESERVE_SECONDS + reading:
            break
        keys = listed[at : min(at + CLOSED_READ_BATCH, max_files)]
        files += [f for f in bucket.closed_read_many(keys) if f is not None]  # None: archived and deleted meanwhile
        cursor, taken, reading = keys[-1], taken + len(keys), time.monotonic() - clock
    left = taken < len(listed)
    exposures = distinct_exposures(e for f in files for e in f.exposures)
    stored = tables.get_risks(sorted({e["user_id"] for e in exposures}))
    still_open = {(item["user_id"], item.get("exposed_at")) for item in stored.values()}
    unread = set(stored.unread)
    by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in exposures:
        day = exposure_day(e)
        if identity(e) not in still_open and e["user_id"] not in unread and day is not None:
            by_day[day].append(e)
    written = sum(_merge_day(bucket, day, final) for day, final in sorted(by_day.items()))
    archived = {identity(e) for final in by_day.values() for e in final}
    done = [f for f in files if all(identity(e) in archived for e in f.exposures)]
    deleted = sum(bucket.closed_delete_many(done))  # False: written again since read; the next run takes it
    rewritten = len(done) - deleted
    if (cursor if left else None) != started_at:
        bucket.archive_cursor_put(cursor if left else None)
    return {
        "files_read": len(files),
        "files_deleted": deleted,
        "files_kept": len(files) - deleted - rewritten,
        "files_written_again": rewritten,
        "exposures_archived": len(archived),
        "exposures_kept": len(exposures) - len(archived),
        "days_written": written,
        "files_left": left,
    }


def _in_turn(bucket: Bucket, cursor: str | None) -> Iterator[Listed]:
    """Yield the files of closed exposures from after `cursor` to the last, then from the first up to `cursor`."""
    yield from bucket.closed_listed(cursor)
    if cursor is not None:
        for item in bucket.closed_listed():
            if item.key > cursor:
                return
            yield item


def _merge_day(bucket: Bucket, day: str, exposures: list[dict[str, Any]]) -> bool:
    """Add exposures to one day's archive, each once (the earliest return any copy saw), over the version read;
    return whether it was written (not when it held them all already)."""
    for _ in range(ARCHIVE_WRITE_ROUNDS):
        current, version = bucket.archive_get(day)
        merged = sorted(distinct_exposures([*current, *exposures]), key=identity)  # the same bytes for the same day
        if version is not None and merged == sorted(current, key=identity):
            return False
        if bucket.archive_put(day, merged, version):
            return True
    raise ArchiveRaceError(f"the archive of {day} changed under {ARCHIVE_WRITE_ROUNDS} writes in a row")


def closed_for_report(
    bucket: Bucket, horizon_days: float, as_of: float, since: float | None = None, *, save: bool = False
) -> tuple[list[dict[str, Any]], Cells]:
    """Return the closed exposures still in files (each once), and the outcome counts of the archived rest.

    The files' exposures may also be open on a risk item, which the caller settles; an archived exposure never is.
    One found in both a file and the archive (a crash between archiving it and deleting its file) is returned with
    the files', with the earliest return of either copy, and left out of the counts.

    A day of the archive whose every exposure is settled (its last one's horizon has passed) counts the same in
    every later report until its object changes, so its counts are saved (`ARCHIVE_COUNTS_KEY`) with the version
    of the object they were counted from, and a later report reads only the days still open at its `as_of`, those
    that changed, and those some file also holds: its work grows with the days of one horizon, not with the
    archive's age. Only a schedule's report saves them (`save`): one on demand (`report`, perhaps with read-only
    credentials, another horizon or a date in the past) only reads them.
    """
    in_files = {identity(e): e for e in distinct_exposures(bucket.closed_all())}
    file_days = {exposure_day(e) for e in in_files.values()}
    first_day = iso_time(since)[:10] if since is not None else ""  # exposure_day's UTC days
    saved, saved_version = bucket.archive_counts_get()
    saved_days = _saved_days(saved, horizon_days)
    versions = bucket.archive_versions()
    counts = {day: entry for day, entry in saved_days.items() if versions.get(day) == entry["version"]}
    cells: Cells = {}
    for day in sorted(versions):
        if day < first_day:
            continue  # exposed before `since`: the report leaves them out
        # the report takes every exposure of the day, each final at `as_of` (saved counts hold no pending one)
        whole = (since is None or day > first_day) and day not in file_days and _settled(day, horizon_days, as_of)
        entry = counts.get(day)
        if whole and entry is not None:
            add_cells(cells, entry["cells"])
            continue
        day_cells, read_version = _day_cells(bucket, day, in_files, horizon_days, as_of, since)
        add_cells(cells, day_cells)
        if whole and read_version is not None:
            counts[day] = {"version": read_version, "cells": day_cells}
    if save and counts != saved_days and bucket.makes_conditional_writes():
        # Lost to another report's write: that one saved counts as good, and the next report saves these.
        bucket.archive_counts_put(
            {"format": COUNTS_FORMAT, "horizon_days": horizon_days, "days": counts}, saved_version
        )
    return list(in_files.values()), cells


def _day_cells(
    bucket: Bucket,
    day: str,
    in_files: dict[tuple[str, str], dict[str, Any]],
    horizon_days: float,
    as_of: float,
    since: float | None,
) -> tuple[Cells, str | None]:
    """Return the outcome counts of one day's archived exposures that no file holds, and the version read; an
    exposure some file holds too lends that copy its return, if earlier."""
    archived, version = bucket.archive_get(day)
    alone = []
    for e in archived:
        copy = in_files.get(identity(e))
        if copy is None:
            alone.append(e)
        else:
            copy["returned_at"] = distinct_exposures([copy, e])[0]["returned_at"]
    return lift_cells(alone, horizon_days, as_of, since), version


def _settled(day: str, horizon_days: float, as_of: float) -> bool:
    """Return whether every exposure of a UTC day has passed its horizon at `as_of`, so its outcome is final."""
    try:
        day_end = parse_timestamp(f"{day}T00:00:00Z") + SECONDS_PER_DAY
    except ValueError:
        return False  # not a day's object: read every time, never saved
    return as_of >= day_end + horizon_days * SECONDS_PER_DAY


def _saved_days(saved: Any, horizon_days: float) -> dict[str, dict[str, Any]]:
    """Return the saved counts by day, as {"version", "cells"}; none when they are of another layout or horizon,
    and without any day whose entry is not well formed (it is then counted again)."""
    if not isinstance(saved, dict) or saved.get("format") != COUNTS_FORMAT or saved.get("horizon_days") != horizon_days:
        return {}
    days = saved.get("days")
    if not isinstance(days, dict):
        return {}
    return {
        day: entry
        for day, entry in days.items()
        if isinstance(entry, dict) and isinstance(entry.get("version"), str) and _well_formed(entry.get("cells"))
    }


def _well_formed(cells: Any) -> bool:
    """Return whether `cells` has the shape lift_cells gives: per cell, per group, a count of each outcome."""
    if not isinstance(cells, dict) or not all(isinstance(key, str) and CELL_SEP in key for key in cells):
        return False
    for groups in cells.values():
        if not isinstance(groups, dict) or set(groups) != {TREATED, HOLDOUT}:
            return False
        for results in groups.values():
            if not isinstance(results, dict) or set(results) != set(OUTCOMES):
                return False
            if not all(type(n) is int and n >= 0 for n in results.values()):
                return False
    return True
