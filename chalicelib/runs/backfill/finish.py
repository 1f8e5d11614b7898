"""The backfill's last step: the ranges' and shards' summaries summed into the file's run record and ledger.

The record has the shape of a single-invocation run's (rows, users, tiers, messages, delivery), plus `backfill`:
its ranges and shards and which of them failed. A run with a failed child is `incomplete` and names it; its
working objects are kept so `aws stepfunctions redrive-execution` can rerun the failed children and this step.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from chalicelib.errors import FileTooLargeError, UnreadableFileError
from chalicelib.ingest.rejects import RejectWriter
from chalicelib.runs.backfill import store
from chalicelib.runs.backfill.store import WorkingSet
from chalicelib.runs.context import RunContext
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.ports import S3Object
from chalicelib.runs.records import FINAL, DeadLetters, Run, RunRecords, add_counts
from chalicelib.scoring.scorer import iso_time

# The status of a run the state machine could not split (a failed split): not final, so a redrive finishes it.
SPLIT_FAILED = "split_failed"


class BackfillFinish:
    """Writes a backfill's run record and ledger record from its children's summaries."""

    def __init__(self, ctx: RunContext, records: RunRecords, files: FileRun) -> None:
        self.ctx = ctx
        self.records = records
        self.files = files

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Sum the children's summaries into the run record, write the ledger, clean up; return the summary."""
        started = self.ctx.clock()
        run_id = state["run_id"]
        work = WorkingSet(self.ctx.bucket, run_id)
        plan = work.get_json(store.PLAN)
        summary = _base(state if plan is None else plan)
        obj = _object(state if plan is None else plan)
        if plan is None:
            done = self.ctx.bucket.run_record_get(run_id)
            if done is not None and done.get("status") in FINAL:
                return done  # finished before, its working objects deleted: a retry of this step changes nothing
            summary.update(status=SPLIT_FAILED, error=_error(state.get("split_error")))
            self.ctx.logger.warning("backfill split failed", extra={"run_id": run_id, "error": summary["error"]})
            return self.records.finish(summary, started)
        if plan.get("unreadable"):
            return self._refuse(plan, obj, summary, started)
        ranges = [work.get_json(store.range_summary(r)) for r in range(len(plan["pieces"]))]
        shards = [work.get_json(store.shard_summary(s)) for s in range(plan["shards"])]
        run = self._sum(plan, summary, ranges, shards)
        self._rejected(plan, work, summary, ranges)
        self.records.settle(run, summary)
        if summary["rows"]["read"] and not summary["rows"]["scored"]:
            self.files._all_rejected(summary)
        failed = _failed(ranges, shards, state)
        summary["backfill"] = {"ranges": len(ranges), "shards": len(shards), **failed}
        if any(failed.values()):
            summary["status"] = "incomplete"
            self.ctx.logger.warning("backfill children failed", extra={"run_id": run_id, **failed})
        self.files._complete(obj, summary, started)
        if not any(failed.values()):
            work.delete(store.every_name(len(ranges), len(shards), plan["gzip"]))
        return summary

    def _sum(self, plan: dict[str, Any], summary: dict[str, Any], ranges: list[Any], shards: list[Any]) -> Run:
        """Put the sum of the children's counts into the summary; return the run holding their dead letters."""
        rows: dict[str, Any] = {"read": 0, "scored": 0, "rejected": 0, "rejected_by_reason": {}}
        for r in ranges:
            if r and r.get("status") == "read":
                add_counts(rows, r["rows"])
        summary["rows"] = rows
        summary["mode"] = "snapshot" if plan["key"].startswith(self.ctx.settings.snapshot_prefix) else "delta"
        run = Run(plan["run_id"], plan["source"])
        done = [s for s in shards if s]
        for s in done:
            run.add(s["totals"])
            dead = DeadLetters.from_json(s["dead"])
            run.dead.users += dead.users
            run.dead.messages += dead.messages
        as_of = max((s["as_of"] for s in done if s["users"]), default=plan["landed_at"])
        self.records.summarise(run, summary, as_of, ("users_new", "users_scored"))
        summary["landed_at"] = iso_time(plan["landed_at"])
        summary["users_as_of_past_landing"] = sum(s["users_as_of_past_landing"] for s in done)
        summary["chunks"] = sum(s["chunks"] for s in done)
        return run

    def _rejected(self, plan: dict[str, Any], work: WorkingSet, summary: dict[str, Any], ranges: list[Any]) -> None:
        """Write the ranges' rejected rows as one reject file, in line order, as one invocation would."""
        if not summary["rows"]["rejected"]:
            return
        merged = RejectWriter()
        for r, info in enumerate(ranges):
            if not info or info.get("status") != "read" or not info["rows"]["rejected"]:
                continue
            data = work.get(store.range_rejected(r)) or b""
            for row in list(csv.DictReader(io.StringIO(data.decode("utf-8")))):
                merged.add(int(row.pop("line")), row.pop("reason"), row.pop("detail"), row)
        summary["rejected_file"] = self.ctx.bucket.put_rejected(plan["key"], merged.to_bytes())
        merged.close()

    def _refuse(self, plan: dict[str, Any], obj: S3Object, summary: dict[str, Any], started: float) -> dict[str, Any]:
        """Quarantine a file the split found unreadable, as one invocation would have."""
        why = plan["unreadable"]
        kind = FileTooLargeError if why["status"] == "too_large" else UnreadableFileError
        self.files._quarantine(obj, plan["source"], summary, kind(plan["source"], why["reason"], why["line"]))
        return self.records.finish(summary, started)


def _base(job: dict[str, Any]) -> dict[str, Any]:
    """Return the start of the run's summary: what a single-invocation run's says of its object."""
    summary = {
        "run_id": job["run_id"],
        "trigger": "s3",
        "source": job["source"],
        "object": {"key": job["key"], "etag": job["etag"], "version_id": job.get("version_id"), "bytes": job["size"]},
    }
    if job.get("identity") and job["identity"] != job["etag"]:
        summary["object"]["identity"] = job["identity"]
    return summary


def _object(job: dict[str, Any]) -> S3Object:
    """Return the object of the run, as its ledger methods need it (no body: it is not read again)."""
    return S3Object(job["key"], io.BytesIO(b""), job["etag"], job.get("version_id"), job["size"], job.get("identity"))


def _failed(ranges: list[Any], shards: list[Any], state: dict[str, Any]) -> dict[str, Any]:
    """Return which ranges and shards failed, and any map's own error."""
    failed: dict[str, Any] = {
        "ranges_failed": [
            {"range": r, "why": (info or {}).get("reason", "did not finish")}
            for r, info in enumerate(ranges)
            if not info or info.get("status") != "read"
        ],
        "shards_failed": [s for s, info in enumerate(shards) if not info],
    }
    errors = {k: _error(state[k]) for k in ("ranges_error", "shards_error") if state.get(k)}
    if errors:
        failed["map_errors"] = errors
    return failed


def _error(caught: Any) -> dict[str, Any] | None:
    """Return the Error and Cause of a Catch, shortened."""
    if not isinstance(caught, dict):
        return None
    return {"error": caught.get("Error"), "cause": str(caught.get("Cause", ""))[:500]}
