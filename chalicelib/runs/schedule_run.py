"""The schedule: process landed files that were missed, then re-score every known user, so silence raises risk."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chalicelib.observability import COUNT, SCHEDULE_USERS_NOT_COVERED
from chalicelib.reporting.publish import publish_report
from chalicelib.retention.outcomes import (
    add_cells,
    distinct_exposures,
    exposure_from_item,
    lift_cells,
    report_from_cells,
)
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.closed_archive import archive_for_run, closed_for_report
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.lease import LeasedDeadline, Leases
from chalicelib.runs.ports import SCHEDULE
from chalicelib.runs.records import FINAL, Run, RunRecords
from chalicelib.runs.sweep import Sweep
from chalicelib.scoring.scorer import iso_time
from chalicelib.settings import Settings

# The share of an invocation's time a segment is sized to fill: the rest is margin for a slower table.
REACH_MARGIN = 0.5


def schedule_run_id(at: float) -> str:
    """Return the run id of the scheduled run at epoch time `at`."""
    return "sched-" + datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def invocation_reach(settings: Settings, deadline: Deadline | None) -> int | None:
    """Return how many users one invocation re-scores with margin: the setting, else the measured rate times the
    invocation's time; None when the invocation has no time limit (the command line)."""
    if settings.schedule_invocation_users is not None:
        return settings.schedule_invocation_users
    seconds_left = getattr(deadline, "seconds_left", None)
    if seconds_left is None:
        return None
    room = max(0.0, seconds_left() - settings.checkpoint_reserve_seconds)
    return max(1, int(settings.schedule_users_per_second * room * REACH_MARGIN))


def measured_writes(summary: dict[str, Any], playbook_version: str) -> dict[str, Any] | None:
    """Return what a finished schedule wrote per user (its risk writes and message marks), or None if it scored none.

    The next plan sizes its segments by it: a schedule skips most unchanged risk items, so it writes far less than
    a write per user, and a plan that assumed the worst would leave most of the table's throughput unused.
    """
    users = int(summary.get("users_scored", 0))
    if summary.get("status") != "succeeded" or users <= 0:
        return None
    written = users - int(summary.get("risk_writes_skipped", 0)) + sum(summary.get("messages_sent", {}).values())
    return {
        "run_id": summary["run_id"],
        "as_of": summary.get("as_of"),
        "users_scored": users,
        "writes": written,
        "write_units_per_user": round(written / users, 4),
        "model_version": summary.get("model_version"),
        "playbook_version": playbook_version,
    }


class ScheduleRun:
    """Sweeps missed files, re-scores every user page by page, and writes the lift report."""

    def __init__(self, ctx: RunContext, worker: ChunkWorker, records: RunRecords, files: FileRun) -> None:
        self.ctx = ctx
        self.worker = worker
        self.records = records
        self.files = files
        self.leases = Leases(ctx)
        self.sweeper = Sweep(ctx, files)

    def run(self, at: float | None = None, deadline: Deadline | None = None) -> dict[str, Any]:
        """Process missed files, then re-score every known user as of `at` (default now); return the summary.

        Raises RunInterrupted after writing a checkpoint when `deadline` leaves no room for another page.
        """
        started = self.ctx.clock()
        deadline = deadline or Deadline()
        at = started if at is None else at
        run_id = schedule_run_id(at)
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "schedule", "source": "schedule"}
        if not self._done_before(summary) and not self._hand_over(at, summary, deadline):
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

    def _hand_over(self, at: float, summary: dict[str, Any], deadline: Deadline) -> bool:
        """Start the schedule state machine when the table is past one invocation's reach; return True if handed over.

        DynamoDB's ItemCount is at most about six hours old: enough to tell a table one invocation covers from one
        it does not. The execution is named after the run id, so a duplicate event starts nothing.
        """
        workflows = self.ctx.workflows
        if workflows is None or not workflows.available(SCHEDULE):
            return False
        reach = invocation_reach(self.ctx.settings, deadline)
        if reach is None:
            return False
        if self.ctx.bucket.checkpoint_get(summary["run_id"]) is not None:
            return False  # an attempt in this invocation's way started it: the rest is its to finish, cap and all
        previous = self.ctx.bucket.run_record_get(summary["run_id"])
        if previous is not None and previous.get("status") == "handed_over":
            summary.update(status="duplicate", execution_arn=previous.get("execution_arn"))
            return True
        users = self.ctx.tables.state_table_stats().items
        if users <= reach:
            return False
        started = workflows.start(SCHEDULE, summary["run_id"], {"run_id": summary["run_id"], "at": at})
        summary.update(execution_arn=started.execution_arn, users_estimate=users, invocation_reach=reach)
        if started.new:
            summary["status"] = "handed_over"
            self.ctx.logger.info("schedule handed over", extra={"run_id": summary["run_id"], "users": users})
            self.ctx.bucket.run_record_put(summary["run_id"], {**summary, "as_of": iso_time(at)})
        else:
            summary["status"] = "duplicate"
        return True

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
        try:
            self._pages(run, checkpoint, at, summary, deadline)
        except RunInterrupted:
            self._cut_short(run, summary, at)
            raise
        deadline.lease.renew()  # an attempt overtaken after its last page leaves the bookkeeping to the taker
        self.records.summarise(run, summary, at, ("users_scored",))
        self.records.settle(run, summary)
        # Once a day is enough for the lift report: it scans the whole risk table. What the day closed is
        # archived first (a redo archives it again to the same effect).
        archive_for_run(self.ctx, run_id, deadline.seconds_left)
        lift = self.lift_report(as_of=at, save_counts=True)
        summary["lift_report"] = self.ctx.bucket.lift_report_put(lift)
        publish_report(self.ctx, summary, lift)
        # The checkpoint goes only once the record is there: a redo without either would start the scan over.
        self.records.finish(summary, started)
        if (measured := measured_writes(summary, self.ctx.scorer.playbook.version)) is not None:
            self.ctx.bucket.schedule_writes_put(measured)  # what the next plan sizes a map by, should it need one
        self.ctx.bucket.checkpoint_delete(run_id)
        return summary

    def _cut_short(self, run: Run, summary: dict[str, Any], at: float) -> None:
        """Say in the run's record and in a metric that the run stopped before covering every user.

        Lambda gives the event two more attempts; a day's run id never resumes the day before's, so what the last
        attempt leaves uncovered stays so, and this record says how many users that may be.
        """
        users = self.ctx.tables.state_table_stats().items
        scored = int(run.totals.get("users_scored", 0)) + int(run.totals.get("expired_skipped", 0))
        # It stopped with a page in hand: at least that page is not covered, however stale the item count.
        not_covered = max(1, users - scored)
        # Kept in the final record too, should a later attempt finish: it says the schedule outgrew one invocation.
        cut = {"users_estimate": users, "users_not_covered": not_covered, "at": iso_time(self.ctx.clock())}
        record = {**summary, **run.totals, "status": "interrupted", "as_of": iso_time(at), "cut_short": cut}
        self.ctx.bucket.run_record_put(run.run_id, record)
        self.ctx.metrics.add_metric(name=SCHEDULE_USERS_NOT_COVERED, unit=COUNT, value=not_covered)
        self.ctx.logger.warning("schedule cut short", extra={"run_id": run.run_id, "users_not_covered": not_covered})

    def _pages(
        self,
        run: Run,
        checkpoint: dict[str, Any],
        at: float,
        summary: dict[str, Any],
        deadline: Deadline,
        segment: tuple[int, int] | None = None,
    ) -> None:
        """Re-score the users of each page of the state table (or of one `(segment, total)` of a parallel scan)
        after the checkpoint's, checkpointing after each."""
        pages_done = int(checkpoint.get("done", 0))
        if pages_done:
            summary["resumed_after_chunks"] = pages_done
        if checkpoint.get("scanned"):
            return  # an attempt that died in the bookkeeping had scored every page
        page_start = checkpoint.get("scan_key")
        scan = {} if segment is None else {"segment": segment[0], "total_segments": segment[1]}
        for stored, resume in self.ctx.tables.scan_states(page_start, self.ctx.settings.chunk_users, as_of=at, **scan):
            if not deadline.room_for_another():
                self.records.checkpoint(run, pages_done, {"scan_key": page_start})
                raise RunInterrupted(run.record_id, pages_done, None)
            if run.budget is not None:
                run.budget.start_chunk(pages_done)  # a redo of this page is the same chunk, with the same grants
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
        """Process the files whose delivery failed or never came, a bounded number a run (see sweep.py)."""
        return self.sweeper.run(now, deadline)

    def lift_report(
        self,
        since: float | None = None,
        as_of: float | None = None,
        horizon_days: float | None = None,
        *,
        save_counts: bool = False,
    ) -> dict[str, Any]:
        """Return win-back rates of treated and holdout users, per risk tier and action, with the lift; the
        schedule's own report saves the archive's settled days' counts for the next (`save_counts`)."""
        horizon = horizon_days if horizon_days is not None else self.ctx.scorer.model.horizon_days
        at = self.ctx.clock() if as_of is None else as_of
        closed, archived = closed_for_report(self.ctx.bucket, horizon, at, since, save=save_counts)
        exposures = closed + [exposure_from_item(item) for item in self.ctx.tables.scan_exposures()]
        cells = add_cells(lift_cells(distinct_exposures(exposures), horizon, at, since), archived)
        return report_from_cells(cells, horizon, at, since)
