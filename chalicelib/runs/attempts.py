"""The isolation boundary of one landed file: its failed attempts are counted, and after too many it is set aside.

An attempt is counted when it starts, before the file is read, so an attempt the runtime kills (out of memory,
out of time) counts although no except clause of it runs. A checkpoint written since the previous attempt started
is progress, whatever became of that attempt: the count starts again, so a long file handed over from invocation
to invocation (RunInterrupted) is never quarantined. When `MAX_FILE_ATTEMPTS` attempts in a row have failed, the
next one moves the file to quarantine/ with the last error, and records it in the ledger as done.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from chalicelib.errors import ChurnGuardError
from chalicelib.observability import COUNT, FILE_ATTEMPTS_FAILED
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import RunInterrupted
from chalicelib.runs.lease import LeaseLost
from chalicelib.runs.ports import S3Object
from chalicelib.scoring.scorer import iso_time

# Kept beside the quarantined file and in the attempt record only: the text of a library's error may quote the file.
DETAIL_CHARS = 2000
KILLED = "no error was recorded: the attempt was stopped from outside (out of memory or out of time)"


def describe(exc: BaseException) -> dict[str, Any]:
    """Return an error as the attempt record keeps it: type, a message safe to log, the full text, and where."""
    safe = getattr(exc, "safe_message", None)
    if safe is None and isinstance(exc, ChurnGuardError):
        safe = str(exc)  # ChurnGuard's own messages name ids, counts and settings, never rows
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
    return {"type": type(exc).__name__, "message": safe, "detail": str(exc)[:DETAIL_CHARS], "where": where}


def reason_of(failed: int, last_error: dict[str, Any] | None) -> str:
    """Return why a file was quarantined, in words safe to log."""
    tried = f"{failed} failed attempt{'s' if failed != 1 else ''} in a row"
    if last_error is None:
        return f"{tried}; {KILLED}"
    said = f": {last_error['message']}" if last_error.get("message") else ""
    return f"{tried}; the last error recorded: {last_error['type']}{said}"


class Attempt:
    """One counted attempt at a file run: a context manager around its work that records how it failed."""

    def __init__(self, ctx: RunContext, summary: dict[str, Any], record: dict[str, Any]) -> None:
        self.ctx = ctx
        self.summary = summary
        self.record = record

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        """Forget the count of a run that finished; record an attempt that raised, and let the error go on."""
        run_id = self.summary["run_id"]
        if exc is None:
            self.ctx.bucket.attempts_delete(run_id)
        elif isinstance(exc, Exception) and not isinstance(exc, (RunInterrupted, LeaseLost)):
            self._failed(exc)
        # A RunInterrupted wrote a checkpoint: progress, which the next attempt sees. A LeaseLost means another
        # attempt runs the file now: no failure of the file. Anything that is not an Exception (the process being
        # stopped) leaves the count as it was written when the attempt started.
        return False

    def _failed(self, exc: Exception) -> None:
        """Keep the error with the count, log it and add it to the metrics."""
        error = describe(exc)
        self.record.update(last_error=error, failed_at=iso_time(self.ctx.clock()))
        self.ctx.bucket.attempts_put(self.summary["run_id"], self.record)
        limit = self.ctx.settings.max_file_attempts
        extra = {
            "run_id": self.summary["run_id"],
            "source": self.summary["source"],
            "attempt": self.record["attempts"],
            "max_attempts": limit,
            "error": error["type"],
            "where": error["where"],
        }
        self.ctx.logger.warning("file attempt failed", extra=extra)
        self.ctx.metrics.add_metric(name=FILE_ATTEMPTS_FAILED, unit=COUNT, value=1)


class FileAttempts:
    """Counts the attempts at each file run in the bucket, and quarantines a file that fails too many."""

    def __init__(self, ctx: RunContext, record_done: Callable[[S3Object, dict[str, Any]], None]) -> None:
        self.ctx = ctx
        self.record_done = record_done  # writes the ledger record of a file (FileRun owns the ledger)

    def start(self, obj: S3Object, summary: dict[str, Any]) -> Attempt | None:
        """Count a new attempt at the run and return it; or, when the run failed too often, quarantine the file,
        fill the summary and return None."""
        run_id = summary["run_id"]
        bucket = self.ctx.bucket
        previous = bucket.attempts_get(run_id) or {}
        checkpoint = bucket.checkpoint_get(run_id) or {}
        done = int(checkpoint.get("done", 0))
        progressed = done > int(previous.get("done", 0))
        failed = 0 if progressed else int(previous.get("attempts", 0))
        last_error = None if progressed else previous.get("last_error")
        if failed >= self.ctx.settings.max_file_attempts:
            self._quarantine(obj, summary, failed, last_error, done)
            return None
        record = {
            "run_id": run_id,
            "key": obj.key,
            "attempts": failed + 1,
            "done": done,  # the checkpoint this attempt started from: a later one means it made progress
            "started_at": iso_time(self.ctx.clock()),
            "last_error": last_error,
        }
        bucket.attempts_put(run_id, record)
        return Attempt(self.ctx, summary, record)

    def _quarantine(
        self, obj: S3Object, summary: dict[str, Any], failed: int, last_error: dict[str, Any] | None, done: int
    ) -> None:
        """Move the file aside with its last error, and record it in the ledger as done, instead of processing it."""
        obj.body.close()
        run_id, bucket = summary["run_id"], self.ctx.bucket
        reason = reason_of(failed, last_error)
        kept = {"source": summary["source"], "reason": reason, "run_id": run_id, "attempts": failed}
        dest = bucket.quarantine(obj.key, obj.version_id, {**kept, "last_error": last_error, "chunks_done": done})
        summary.update(status="quarantined", reason=reason, attempts=failed, moved_to=dest)
        if done:
            # Those chunks' users stay merged: their state already holds this run, which a redo would skip.
            summary["chunks_done"] = done
        self.ctx.logger.warning("file quarantined", extra=kept)
        self.record_done(obj, {"run_id": run_id, "status": "quarantined", "reason": reason})
        bucket.checkpoint_delete(run_id)
        bucket.attempts_delete(run_id)
