"""The schedule: process landed files that were missed, then re-score every known user, so silence raises risk."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chalicelib.retention.outcomes import exposure_from_item, lift_report
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.lease import LeasedDeadline, LeaseLost, Leases
from chalicelib.runs.ports import Listed
from chalicelib.runs.records import FINAL, Run, RunRecords


def schedule_run_id(at: float) -> str:
    """Return the run id of the scheduled run at epoch time `at`."""
    return "sched-" + datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


class ScheduleRun:
    """Sweeps missed files, re-scores every user page by page, and writes the lift report."""

    def __init__(self, ctx: RunContext, worker: ChunkWorker, records: RunRecords, files: FileRun) -> None:
        self.ctx = ctx
        self.worker = worker
        self.records = records
        self.files = files
        self.leases = Leases(ctx)

    def run(self, at: float | None = None, deadline: Deadline | None = None) -> dict[str, Any]:
        """Process missed files, then re-score every known user as of `at` (default now); return the summary.

        Raises RunInterrupted after writing a checkpoint when `deadline` leaves no room for another page.
        """
        started = self.ctx.clock()
        deadline = deadline or Deadline()
        at = started if at is None else at
        run_id = schedule_run_id(at)
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "schedule", "source": "schedule"}
        if not self._done_before(summary):
            # One attempt at a time: a copy of this event running now holds the run's lease (see lease.py).
            done = self.leases.exclusive(summary, deadline, lambda held: self._leased(at, started, summary, held))
            if done is not None:
                return done
        return self.records.finish(summary, started, write=False)

    def _done_before(self, summary: dict[str, Any]) -> bool:
        """Return True, the summary marked duplicate, when the run has a final record already."""
        run_id = summary["run_id"]
        previous = self.ctx.bucket.run_record_get(run_id)
        if previous is not None and previous.get("status") in FINAL:
            self.ctx.bucket.checkpoint_delete(run_id)  # left by an attempt that died just after its record
            summary.update(status="duplicate", first_run={"run_id": run_id, "status": previous["status"]})
            return True
        return False

    def _leased(self, at: float, started: float, summary: dict[str, Any], deadline: LeasedDeadline) -> dict[str, Any]:
        """Do the scheduled run under its lease; return the summary."""
        run_id = summary["run_id"]
        # A copy that finished between the first look at the run record and the lease leaves nothing to do.
        if self._done_before(summary):
            return self.records.finish(summary, started, write=False)
        summary["swept_files"] = self.sweep(started, deadline)
        # After the sweep, whose files score as of their landing: from here on no score older than `at` is written
        # over a stored one, as if every item had been written as of `at` (chunk.py skips unchanged ones).
        self.ctx.bucket.mark_rescored(at)
        run, checkpoint = self.records.resume(run_id, "schedule")
        self._pages(run, checkpoint, at, summary, deadline)
        deadline.lease.renew()  # an attempt overtaken after its last page leaves the bookkeeping to the taker
        self.records.summarise(run, summary, at, ("users_scored",))
        self.records.settle(run, summary)
        # Once a day is enough for the lift report: it scans the whole risk table.
        summary["lift_report"] = self.ctx.bucket.lift_report_put(self.lift_report(as_of=at))
        # The checkpoint goes only once the record is there: a redo without either would start the scan over.
        self.records.finish(summary, started)
        self.ctx.bucket.checkpoint_delete(run_id)
        return summary

    def _pages(
        self, run: Run, checkpoint: dict[str, Any], at: float, summary: dict[str, Any], deadline: Deadline
    ) -> None:
        """Re-score the users of each page of the state table after the checkpoint's, checkpointing after each."""
        pages_done = int(checkpoint.get("done", 0))
        if pages_done:
            summary["resumed_after_chunks"] = pages_done
        if checkpoint.get("scanned"):
            return  # an attempt that died in the bookkeeping had scored every page
        page_start = checkpoint.get("scan_key")
        for stored, resume in self.ctx.tables.scan_states(page_start, self.ctx.settings.chunk_users, as_of=at):
            if not deadline.room_for_another():
                self.records.checkpoint(run, pages_done, {"scan_key": page_start})
                raise RunInterrupted(run.run_id, pages_done, None)
            deadline.start_chunk()
            # Users past their retention are forgotten, even while TTL has yet to delete their items.
            run.add({"expired_skipped": stored.expired})
            run.locales = {uid: loc[1] for uid, loc in stored.locales.items()}
            self.worker.score_deliver(run, stored.batch, stored.versions, dict.fromkeys(stored.batch.user_ids, at))
            deadline.end_chunk()
            pages_done += 1
            page_start = resume
            # After the last page too: a redo that finds every page scored goes straight to the bookkeeping.
            self.records.checkpoint(run, pages_done, {"scan_key": resume, "scanned": resume is None})

    def sweep(self, now: float, deadline: Deadline) -> list[dict[str, Any]]:
        """Process every incoming file that has no ledger entry and is older than the minimum age."""
        swept = []
        for item in self.ctx.bucket.unprocessed(self.ctx.settings.incoming_prefix):
            if now - item.last_modified.timestamp() < self.ctx.settings.sweep_min_age_seconds:
                continue  # its own S3 trigger is probably still running
            swept.append(self._sweep_one(item, deadline))
        return swept

    def _sweep_one(self, item: Listed, deadline: Deadline) -> dict[str, Any]:
        """Process one missed file; a failure of that file is logged and reported, never raised into the schedule."""
        try:
            result = self.files.process(item.key, None, item.last_modified.timestamp(), deadline)
        except (RunInterrupted, LeaseLost):
            raise  # out of time or overtaken: the whole invocation hands over, the file's checkpoint included
        except Exception as exc:  # the isolation boundary: one bad file must never stop the re-score of everyone
            source = self.ctx.bucket.url(item.key)
            # Named by type only: an error's text may quote the file.
            self.ctx.logger.warning("swept file failed", extra={"source": source, "error": type(exc).__name__})
            return {"key": item.key, "run_id": None, "status": "failed", "error": type(exc).__name__}
        return {"key": item.key, "run_id": result.get("run_id"), "status": result["status"]}

    def lift_report(
        self, since: float | None = None, as_of: float | None = None, horizon_days: float | None = None
    ) -> dict[str, Any]:
        """Return win-back rates of treated and holdout users, per risk tier and action, with the lift."""
        exposures = list(self.ctx.bucket.closed_all())
        exposures += [exposure_from_item(item) for item in self.ctx.tables.scan_exposures()]
        horizon = horizon_days if horizon_days is not None else self.ctx.scorer.model.horizon_days
        return lift_report(exposures, horizon, self.ctx.clock() if as_of is None else as_of, since)
