"""The schedule on the schedule state machine (infra/statemachines/schedule.asl.json): plan, segments, finish.

A table past one invocation's reach is re-scored by a Distributed Map over the segments of a DynamoDB parallel
Scan. The plan sweeps missed files, sizes the segments and writes their list for the map's item reader. Each
segment child scans its segment to the end page by page, as the single-invocation schedule does, with its own
checkpoint, lease and dead letters; out of time it checkpoints and raises RunInterrupted, and the state machine
invokes it again. The message cap is one counter for the whole run (message_cap.py). A second map over the same
segments keeps the lift report's partial sums, once every user is scored. The finish sums the segments' records and
lift sums into the run's record, which has the shape of a single-invocation schedule's;
a segment that did not finish makes the run `incomplete`, and its users not covered are named for `replay`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from chalicelib.errors import ChurnGuardError, InputError, RetryableError
from chalicelib.observability import COUNT, SCHEDULE_USERS_NOT_COVERED
from chalicelib.reporting.publish import publish_report
from chalicelib.retention.outcomes import (
    Cells,
    add_cells,
    distinct_exposures,
    exposure_from_item,
    identity,
    lift_cells,
    report_from_cells,
)
from chalicelib.runs.closed_archive import archive_for_run, closed_for_report
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.lease import UNBOUNDED_LEASE_SECONDS, LeasedDeadline, Leases
from chalicelib.runs.message_cap import SharedMessageCap
from chalicelib.runs.ports import TableStats
from chalicelib.runs.records import FINAL, DeadLetters, Run, RunRecords, add_counts, attempts_with
from chalicelib.runs.schedule_run import REACH_MARGIN, ScheduleRun, invocation_reach, measured_writes
from chalicelib.scoring.scorer import iso_time
from chalicelib.settings import Settings

# A new on-demand table takes about this many writes a second at once (more once warm throughput is set).
ON_DEMAND_START_WRITE_UNITS = 4000
# Write units one re-scored user costs the schedule before a schedule has measured it (write_units_per_user): its
# risk item (under 1 KB, one unit; make benchmark measures them) and the mark of a message for about one in five.
DEFAULT_WRITE_UNITS_PER_USER = 1.2
# A measured rate is taken within these bounds: a quiet day that rewrote almost nothing must not plan a map that
# throttles the table on a busier one (at the floor, a day rewriting every item takes at most 2.4 times the plan).
MIN_WRITE_UNITS_PER_USER, MAX_WRITE_UNITS_PER_USER = 0.5, 2.0
# DynamoDB's bound on TotalSegments.
MAX_TOTAL_SEGMENTS = 1_000_000
# The second map over the same segments: the lift report's partial sums, once every segment is scored.
LIFT_PHASE = "lift"


class PartInProgress(RetryableError):
    """Another attempt holds the lease of this part of the run; the state machine tries again later."""


def part_id(run_id: str, segment: int, total_segments: int) -> str:
    """Return the id one segment of a schedule run keeps its record, checkpoint and dead letters under."""
    return f"{run_id}.seg-{segment:04d}-of-{total_segments:04d}"


def lift_id(run_id: str, segment: int, total_segments: int) -> str:
    """Return the id one segment's lift report partial sums are kept under."""
    return f"{part_id(run_id, segment, total_segments)}.lift"


def _segment_of(item: dict[str, Any]) -> tuple[str, float, int, int]:
    """Return (run id, as_of, segment, total) of a map item; raise InputError for one that is no segment."""
    run_id, at = str(item["run_id"]), float(item["at"])
    seg, total = int(item["segment"]), int(item["total_segments"])
    if not 0 <= seg < total <= MAX_TOTAL_SEGMENTS:
        raise InputError(f"segment {seg} of {total} is no segment of a parallel scan")
    return run_id, at, seg, total


def plan_id(run_id: str) -> str:
    """Return the id the plan of a schedule run keeps its record under."""
    return f"{run_id}.plan"


def segment_count(
    stats: TableStats, reach: int, settings: Settings, units_per_user: float = DEFAULT_WRITE_UNITS_PER_USER
) -> int:
    """Return TotalSegments: enough for each segment to fit one invocation's reach, no more than are useful.

    More than the map's MaxConcurrency would only wait, and more than the table's write throughput can take at
    once would only be throttled; past those a segment is simply longer and takes more invocations. A segment
    writes `units_per_user` write units for each of the SCHEDULE_USERS_PER_SECOND users it re-scores a second.
    """
    wanted = math.ceil(stats.items / max(1, reach))
    write_units = stats.write_units_per_second or ON_DEMAND_START_WRITE_UNITS
    useful = int(write_units // max(1.0, settings.schedule_users_per_second * units_per_user))
    return max(1, min(wanted, settings.schedule_max_concurrency, useful, MAX_TOTAL_SEGMENTS))


def write_units_per_user(measured: dict[str, Any] | None, model_version: str, playbook_version: str) -> float:
    """Return the write units a user will cost this schedule: the last schedule's, within bounds, else the default.

    A new model or playbook (or a first run) may change every user's score or action, and so rewrite every item:
    the default then.
    """
    if not measured or (measured.get("model_version"), measured.get("playbook_version")) != (
        model_version,
        playbook_version,
    ):
        return DEFAULT_WRITE_UNITS_PER_USER
    value = float(measured.get("write_units_per_user", DEFAULT_WRITE_UNITS_PER_USER))
    return min(MAX_WRITE_UNITS_PER_USER, max(MIN_WRITE_UNITS_PER_USER, value))


class ScheduleMap:
    """The three steps of the schedule state machine: plan, one segment, finish."""

    def __init__(self, ctx: RunContext, schedule: ScheduleRun, records: RunRecords) -> None:
        self.ctx = ctx
        self.schedule = schedule
        self.records = records
        self.leases = Leases(ctx)

    # ---- plan --------------------------------------------------------------------------------------
    def plan(self, event: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """Sweep missed files, size the segments and write their list; return what the map reads."""
        run_id, at = str(event["run_id"]), float(event["at"])
        deadline = deadline or Deadline()
        planned = self.ctx.bucket.run_record_get(plan_id(run_id))
        if planned is None:
            planned = self._new_plan(run_id, at, deadline)
        return {key: planned[key] for key in ("run_id", "at", "total_segments", "segments_key", "max_concurrency")}

    def _new_plan(self, run_id: str, at: float, deadline: Deadline) -> dict[str, Any]:
        """Sweep, size and write the segment list of a run planned for the first time; return its plan record."""
        settings = self.ctx.settings
        # Without a time limit (the command line), as for a function of Lambda's longest timeout.
        unbounded = settings.schedule_users_per_second * UNBOUNDED_LEASE_SECONDS * REACH_MARGIN
        reach = invocation_reach(settings, deadline) or unbounded
        stats = self.ctx.tables.state_table_stats()
        scorer = self.ctx.scorer
        units = write_units_per_user(
            self.ctx.bucket.schedule_writes_get(), scorer.model.model_version, scorer.playbook.version
        )
        total = segment_count(stats, int(reach), self.ctx.settings, units)
        summary: dict[str, Any] = {"run_id": plan_id(run_id)}
        # The sweep runs under the run's own lease, as in one invocation: a copy of the plan waits for it.
        swept = self.leases.exclusive(summary, deadline, lambda held: {"files": self._sweep(held)})
        if swept is None:
            raise PartInProgress(f"run {run_id}: the plan is {summary['status']} in another attempt")
        # Before any segment scores: a file run from now on treats an unchanged stored score as of `at`.
        self.ctx.bucket.mark_rescored(at)
        segments = [{"run_id": run_id, "at": at, "segment": i, "total_segments": total} for i in range(total)]
        planned = {
            "run_id": run_id,
            "at": at,
            "total_segments": total,
            "segments_key": self.ctx.bucket.segments_put(run_id, segments),
            "max_concurrency": min(total, self.ctx.settings.schedule_max_concurrency),
            "users_estimate": stats.items,
            "invocation_reach": int(reach),
            "write_units_per_user": units,
            "swept_files": swept["files"],
        }
        self.ctx.bucket.run_record_put(plan_id(run_id), planned)
        self.ctx.logger.info("schedule planned", extra={"run_id": run_id, "total_segments": total})
        return planned

    def _sweep(self, deadline: LeasedDeadline) -> list[dict[str, Any]]:
        """Process the landed files that were missed, as the single-invocation schedule does first."""
        return self.schedule.sweep(self.ctx.clock(), deadline)

    # ---- one segment -------------------------------------------------------------------------------
    def segment(self, item: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """Re-score every user of one segment to its end; return the segment's summary.

        Raises RunInterrupted after a checkpoint when out of time, PartInProgress when another copy holds it.
        """
        if item.get("phase") == LIFT_PHASE:
            return self.lift_part(item["item"])
        run_id, at, seg, total = _segment_of(item)
        pid = part_id(run_id, seg, total)
        started = self.ctx.clock()
        summary: dict[str, Any] = {"run_id": pid, "schedule_run_id": run_id, "segment": seg, "total_segments": total}
        previous = self.ctx.bucket.run_record_get(pid)
        if previous is not None and previous.get("status") in FINAL:
            return {**summary, "status": "duplicate"}
        done = self.leases.exclusive(
            summary, deadline or Deadline(), lambda held: self._segment_leased(run_id, at, seg, total, summary, held)
        )
        if done is None:
            raise PartInProgress(f"segment {pid} is {summary['status']} in another attempt")
        summary["duration_s"] = round(self.ctx.clock() - started, 3)
        return {k: v for k, v in done.items() if k != "totals"}

    def _segment_leased(
        self, run_id: str, at: float, seg: int, total: int, summary: dict[str, Any], deadline: LeasedDeadline
    ) -> dict[str, Any]:
        """Score the segment under its lease, then keep its record: its totals and its dead letters."""
        pid = summary["run_id"]
        previous = self.ctx.bucket.run_record_get(pid)
        if previous is not None and previous.get("status") in FINAL:
            return {**summary, "status": "duplicate"}
        run, checkpoint = self.records.resume(run_id, "schedule", part=pid)
        run.budget = SharedMessageCap.of_run(self.ctx, run_id, f"seg-{seg}-of-{total}")
        self.schedule._pages(run, checkpoint, at, summary, deadline, segment=(seg, total))
        deadline.lease.renew()  # an attempt overtaken after its last page leaves the bookkeeping to the taker
        summary.update(
            status="succeeded",
            as_of=iso_time(at),
            users_scored=int(run.totals.get("users_scored", 0)),
            totals=run.totals,
            dead_lettered={"users": len(run.dead.users), "messages": len(run.dead.messages)},
            finished_at=iso_time(self.ctx.clock()),
        )
        if run.dead:
            self.ctx.bucket.dead_letters_put(pid, run.dead.to_json(run_id))
        # The record first, then the checkpoint goes: a redo without either would start the segment over.
        self.ctx.bucket.run_record_put(pid, summary)
        self.ctx.bucket.checkpoint_delete(pid)
        return summary

    # ---- lift report partial sums --------------------------------------------------------------------
    def lift_part(self, item: dict[str, Any]) -> dict[str, Any]:
        """Keep the lift report's partial sums of the open exposures in one segment of the risk table.

        Run as a second map over the same segments once every segment is scored, so the sums see the exposures the
        run itself started, as the single-invocation report does. The risk table's segments need not hold the
        state table's users: any split of the risk table into disjoint parts adds up to the whole.
        """
        run_id, at, seg, total = _segment_of(item)
        horizon = self.ctx.scorer.model.horizon_days
        open_exposures = [exposure_from_item(i) for i in self.ctx.tables.scan_exposures(seg, total)]
        cells = lift_cells(open_exposures, horizon, at)
        self.ctx.bucket.run_record_put(lift_id(run_id, seg, total), {"run_id": run_id, "lift_cells": cells})
        return {"run_id": run_id, "segment": seg, "status": "succeeded", "exposures": len(open_exposures)}

    # ---- finish ------------------------------------------------------------------------------------
    def finish(self, event: dict[str, Any], seconds_left: Callable[[], float] | None = None) -> dict[str, Any]:
        """Sum the segments into the run's record and lift report; name what did not finish; return the summary.

        `seconds_left` is the invocation's time left, which bounds the archiving of closed exposures.
        """
        run_id, at = str(event["run_id"]), float(event["at"])
        started = self.ctx.clock()
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "schedule", "source": "schedule", "execution": "map"}
        previous = self.ctx.bucket.run_record_get(run_id)
        if previous is not None and previous.get("status") == "succeeded":
            return self.records.finish({**summary, "status": "duplicate"}, started, write=False)
        planned = self.ctx.bucket.run_record_get(plan_id(run_id))
        run = Run(run_id, "schedule")
        failed = self._sum_segments(run, planned, at)
        summary["swept_files"] = (planned or {}).get("swept_files", [])
        summary["segments"] = {"total": (planned or {}).get("total_segments", 0), "failed": failed}
        self.records.summarise(run, summary, at, ("users_scored",))
        self.records.settle(run, summary)
        if not run.dead and previous is not None and "dead_letter" in previous:
            self.ctx.bucket.dead_letters_delete(run_id)  # an earlier finish's, now redone by the segments
        if failed or planned is None:
            self._incomplete(run, summary, event, failed)
        publish_report(self.ctx, summary, self._lift_report(summary, planned, at, seconds_left))
        self.records.finish(summary, started, write=False)
        self.ctx.bucket.run_record_put(run_id, {**summary, "attempts": _attempts(previous, summary)})
        if (measured := measured_writes(summary, self.ctx.scorer.playbook.version)) is not None:
            self.ctx.bucket.schedule_writes_put(measured)
        # What the state machine gets back stays small (its payloads are at most 256 KB): the files swept are
        # in the record.
        return {**summary, "swept_files": len(summary["swept_files"])}

    def _sum_segments(self, run: Run, planned: dict[str, Any] | None, at: float) -> list[dict[str, Any]]:
        """Add each finished segment's totals and dead letters into the run; return the unfinished ones."""
        if planned is None:
            return []
        total = int(planned["total_segments"])
        failed = []
        for seg in range(total):
            pid = part_id(run.run_id, seg, total)
            record = self.ctx.bucket.run_record_get(pid)
            if record is None or record.get("status") != "succeeded":
                failed.append(self._not_covered(run, seg, total, at))
                continue
            self.ctx.bucket.checkpoint_delete(pid)  # left by a child that died between its record and this
            add_counts(run.totals, record.get("totals", {}))
            left = DeadLetters.from_json(self.ctx.bucket.dead_letters_get(pid))
            run.dead.users += left.users
            run.dead.messages += left.messages
        return failed

    def _not_covered(self, run: Run, seg: int, total: int, at: float) -> dict[str, Any]:
        """Return what one unfinished segment left: its users after its checkpoint, each kept for `replay`."""
        pid = part_id(run.run_id, seg, total)
        checkpoint = self.ctx.bucket.checkpoint_get(pid) or {}
        scored = checkpoint.get("totals", {})
        add_counts(run.totals, scored)  # what it did before it stopped was done
        left = DeadLetters.from_json(self.ctx.bucket.dead_letters_get(pid))
        run.dead.users += left.users
        run.dead.messages += left.messages
        found: dict[str, Any] = {"segment": seg, "part": pid, "users_scored": scored.get("users_scored", 0)}
        found["users_not_covered"] = 0
        if checkpoint.get("scanned"):
            return found  # every page was scored: only the segment's bookkeeping was left
        pages = self.ctx.tables.scan_states(
            checkpoint.get("scan_key"), self.ctx.settings.chunk_users, as_of=at, segment=seg, total_segments=total
        )
        try:
            for stored, _ in pages:
                for uid in stored.batch.user_ids:
                    run.dead.add_user(uid, at)
                found["users_not_covered"] += len(stored.batch)
        except ChurnGuardError as exc:  # a segment whose very items cannot be read: named, counted as far as read
            found["unreadable"] = type(exc).__name__
        return found

    def _incomplete(self, run: Run, summary: dict[str, Any], event: dict[str, Any], failed: list[dict]) -> None:
        """Mark the run incomplete, with the segments and users it did not cover, in its record and a metric."""
        users = sum(f["users_not_covered"] for f in failed)
        summary["status"] = "incomplete"
        summary["not_covered"] = {"segments": [f["segment"] for f in failed], "users": users}
        if "dead_letter" in summary:
            summary["not_covered"]["dead_letter"] = summary["dead_letter"]["key"]
        errors = {k: event[k] for k in ("plan_error", "map_error", "lift_error") if k in event}
        if errors:
            summary["errors"] = errors
        if summary["segments"]["total"] == 0:  # the plan never finished: nobody was re-scored
            users = self.ctx.tables.state_table_stats().items
            summary["not_covered"].update(users=users, why="the plan did not finish")
        self.ctx.metrics.add_metric(name=SCHEDULE_USERS_NOT_COVERED, unit=COUNT, value=users)
        extra = {"run_id": run.run_id, "not_covered": summary["not_covered"]}
        self.ctx.logger.warning("schedule incomplete", extra=extra)

    def _lift_report(
        self,
        summary: dict[str, Any],
        planned: dict[str, Any] | None,
        at: float,
        seconds_left: Callable[[], float] | None = None,
    ) -> dict[str, Any] | None:
        """Write the lift report from the segments' partial sums and return it; without all of them, keep the last
        one and return None."""
        total = int((planned or {}).get("total_segments", 0))
        parts = [self.ctx.bucket.run_record_get(lift_id(summary["run_id"], seg, total)) for seg in range(total)]
        missing = [seg for seg, part in enumerate(parts) if part is None]
        if missing or not total:
            summary["lift_report"] = None
            summary["lift_report_missing_segments"] = missing
            return None
        cells: Cells = {}
        for part in parts:
            add_cells(cells, part["lift_cells"])
        # What the day closed is archived first (a redo archives it again to the same effect).
        archive_for_run(self.ctx, summary["run_id"], seconds_left)
        horizon = self.ctx.scorer.model.horizon_days
        report = report_from_cells(self._with_closed(cells, horizon, at), horizon, at)
        summary["lift_report"] = self.ctx.bucket.lift_report_put(report)
        return report

    def _with_closed(self, cells: Cells, horizon: float, at: float) -> Cells:
        """Add the closed exposures to the segments' sums of open ones, each exposure once (as `lift_report`).

        An exposure is kept as closed before the write that replaces it, so one may be both closed and still open
        on its user's risk item: that open copy, counted by its segment, is taken out and counted with the closed.
        """
        closed, archived = closed_for_report(self.ctx.bucket, horizon, at, save=True)
        keys = {identity(e) for e in closed}
        stored = self.ctx.tables.get_risks(sorted({user for user, _ in keys}))
        still_open = [exposure_from_item(i) for i in stored.values() if (i["user_id"], i.get("exposed_at")) in keys]
        add_cells(cells, lift_cells(still_open, horizon, at), sign=-1)
        add_cells(cells, archived)  # final: no risk item holds them, so no segment counted them
        return add_cells(cells, lift_cells(distinct_exposures([*closed, *still_open]), horizon, at))


def _attempts(previous: dict[str, Any] | None, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the finish attempts a run record lists, this one added."""
    return attempts_with(previous, {k: summary[k] for k in ("status", "finished_at") if k in summary})
