"""The schedule's sweep: files whose delivery failed, and files whose notification never came; never the history.

Two bounded sources, so the sweep's cost never grows with the files processed before:
1. The failed-delivery queues (ports.MissedFiles): the files queue's dead-letter queue and the on-failure
   destination of on_behaviour_file's asynchronous invocations. At most SWEEP_MAX_MESSAGES a run; a message is
   deleted only once each of its files reached a final status (a file failing again is counted by
   runs/attempts.py and quarantined after MAX_FILE_ATTEMPTS, which is final too), else it comes back next run.
2. A reconciliation listing of the incoming prefix: at most SWEEP_LIST_MAX_KEYS keys a run, resumed after the
   key the last run stopped at (kept beside the ledger), each checked against the ledger. It never passes a
   file younger than SWEEP_MIN_AGE_SECONDS (its own delivery may be on its way): it stops there and resumes from
   it next run, so with time-ordered keys it follows the tail of the prefix. Files older than the ledger's
   retention are left alone: the ledger no longer knows whether they were processed.
"""

from __future__ import annotations

from typing import Any

from chalicelib.observability import COUNT, FILES_MESSAGES_DROPPED
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.lease import LeaseLost
from chalicelib.runs.notifications import MalformedNotificationError, landed_objects, unusable, within_ledger
from chalicelib.runs.ports import Listed, Missed
from chalicelib.runs.records import FINAL

# Statuses after which a file needs nothing more: its message may go.
SETTLED = frozenset({*FINAL, "duplicate", "ignored", "refused", "gone", "past_ledger_retention", "dropped"})
# How long a received message stays hidden when the invocation's end is unknown (the function's maximum timeout).
HIDE_SECONDS = 900
HIDE_MARGIN_SECONDS = 60


class Sweep:
    """Finds the files the stream missed and runs each through the file run, one failure never stopping the rest."""

    def __init__(self, ctx: RunContext, files: FileRun) -> None:
        self.ctx = ctx
        self.files = files

    def run(self, now: float, deadline: Deadline) -> list[dict[str, Any]]:
        """Process the failed deliveries, then the files the reconciliation listing finds; return what each became."""
        return self._drain(now, deadline) + self._reconcile(now, deadline)

    # ---- the failed-delivery queues ------------------------------------------------------------
    def _drain(self, now: float, deadline: Deadline) -> list[dict[str, Any]]:
        """Process up to SWEEP_MAX_MESSAGES messages of the failed-delivery queues; delete the settled ones."""
        limit = self.ctx.settings.sweep_max_messages
        if self.ctx.missed is None or limit == 0:
            return []
        swept: list[dict[str, Any]] = []
        for message in self.ctx.missed.receive(limit, _hide_seconds(deadline)):
            results = self._message(message, now, deadline)
            if all(result["status"] in SETTLED for result in results):
                self.ctx.missed.delete(message)
            swept += results
        return swept

    def _message(self, message: Missed, now: float, deadline: Deadline) -> list[dict[str, Any]]:
        """Process the files of one failed delivery; return what each became."""
        try:
            landed = landed_objects(message.body)
        except MalformedNotificationError as exc:
            self._dropped(message.queue, str(exc))
            return [{"key": None, "run_id": None, "status": "dropped", "queue": message.queue}]
        results = []
        for item in landed:
            refused = unusable(item, self.ctx.bucket.bucket, now, self.ctx.settings.ledger_retention_seconds)
            if refused is None:
                results.append(self._one(item.key, item.version_id, item.landed_at, deadline))
            else:
                self._dropped(message.queue, refused[1])
                results.append({"key": item.key, "run_id": None, "status": refused[0], "queue": message.queue})
        return results

    def _dropped(self, queue: str, why: str) -> None:
        """Log and count a message no retry can help."""
        self.ctx.logger.warning("missed-file message dropped", extra={"queue": queue, "why": why})
        self.ctx.metrics.add_metric(name=FILES_MESSAGES_DROPPED, unit=COUNT, value=1)

    # ---- the reconciliation listing ------------------------------------------------------------
    def _reconcile(self, now: float, deadline: Deadline) -> list[dict[str, Any]]:
        """List a bounded window of the incoming prefix after the last run's cursor; process files not in the ledger."""
        settings, ledger = self.ctx.settings, self.ctx.tables.ledger
        if settings.sweep_list_max_keys == 0:
            return []
        after = ledger.cursor()
        listed, resume = self.ctx.bucket.listing(settings.incoming_prefix, after, settings.sweep_list_max_keys)
        swept = []
        for item in listed:
            age = now - item.last_modified.timestamp()
            if age < settings.sweep_min_age_seconds:
                resume = after  # its own delivery may be on its way: the next run lists from here again
                break
            after = item.key
            if not within_ledger(item.last_modified.timestamp(), now, settings.ledger_retention_seconds):
                continue
            if ledger.find(item.key, item.etag) is None:
                swept.append(self._listed(item, deadline))
        ledger.set_cursor(resume)
        return swept

    def _listed(self, item: Listed, deadline: Deadline) -> dict[str, Any]:
        """Process one listed file the ledger does not know."""
        return self._one(item.key, None, item.last_modified.timestamp(), deadline)

    # ---- one file --------------------------------------------------------------------------------
    def _one(self, key: str, version_id: str | None, landed_at: float | None, deadline: Deadline) -> dict[str, Any]:
        """Process one missed file; a failure of that file is logged and reported, never raised into the schedule."""
        try:
            result = self.files.process(key, version_id, landed_at, deadline)
        except (RunInterrupted, LeaseLost):
            raise  # out of time or overtaken: the whole invocation hands over, the file's checkpoint included
        except Exception as exc:  # the isolation boundary: one bad file must never stop the re-score of everyone
            source = self.ctx.bucket.url(key)
            # Named by type only: an error's text may quote the file.
            self.ctx.logger.warning("swept file failed", extra={"source": source, "error": type(exc).__name__})
            return {"key": key, "run_id": None, "status": "failed", "error": type(exc).__name__}
        return {"key": key, "run_id": result.get("run_id"), "status": result["status"]}


def _hide_seconds(deadline: Deadline) -> int:
    """Return how long a received message stays hidden: past the end of this invocation, so no other sweep takes it
    while this one works on it, and it comes back soon after an invocation that stopped."""
    left = deadline.seconds_left
    seconds = HIDE_SECONDS if left is None else left()
    return int(seconds) + HIDE_MARGIN_SECONDS
