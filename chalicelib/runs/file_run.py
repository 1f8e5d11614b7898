"""A landed behaviour file: read it, merge its users' deltas, re-score them, deliver; once per object content."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest import ReadResult, read_events
from chalicelib.observability import COUNT, FILES_ALL_ROWS_REJECTED
from chalicelib.retention.outcomes import EventIndex
from chalicelib.runs.attempts import FileAttempts
from chalicelib.runs.backfill.routing import hand_over
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.lease import LeasedDeadline, Leases
from chalicelib.runs.ports import ObjectGoneError, S3Object
from chalicelib.runs.records import FINAL, Run, RunRecords
from chalicelib.scoring.scorer import iso_time
from chalicelib.scoring.state import StateBatch, build_state, col


def key_problem(key: str) -> str | None:
    """Return why an object key is refused (a path trick or a control character), or None when it is fine."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "the key holds a control character"
    if "\\" in key:
        return "the key holds a backslash"
    segments = key.split("/")
    if any(segment in (".", "..") for segment in segments):
        return "the key has a '.' or '..' path segment"
    if "" in segments[:-1]:
        return "the key has an empty path segment"
    return None


# Score times past a file's landing are rounded up to one of this many steps of its future tolerance.
AS_OF_STEPS = 24
HOUR = 3600.0


def users_as_of(delta: StateBatch, landed_at: float, tolerance: float) -> dict[str, float]:
    """Return each user's score time: the landing time, or just past the user's own latest event if that is later.

    Per user, so one skewed clock (a row up to `tolerance` past landing) moves only its own user. A time past
    landing is rounded up to a step of at least an hour, at most AS_OF_STEPS of them within the tolerance:
    each distinct time is one call of the model per chunk, and a file whose every clock is ahead would
    otherwise make one call per user.
    """
    step = max(HOUR, tolerance / AS_OF_STEPS)
    ahead = np.maximum(delta.values[:, col("last_seen")] - landed_at, 0.0)
    return dict(zip(delta.user_ids, (landed_at + np.ceil(ahead / step) * step).tolist(), strict=True))


def ledger_record(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the ledger record of a finished run, from its summary."""
    return {"run_id": summary["run_id"], "status": summary["status"], "as_of": summary.get("as_of")}


def object_run_id(bucket: str, key: str, identity: str) -> str:
    """Return the run id of one object content (S3Object.identity): the same on every redelivery."""
    return "obj-" + hashlib.sha256(f"{bucket}\x1f{key}\x1f{identity}".encode()).hexdigest()[:20]


class FileRun:
    """Processes one landed object, resuming from its checkpoint when an earlier attempt stopped."""

    def __init__(self, ctx: RunContext, worker: ChunkWorker, records: RunRecords) -> None:
        self.ctx = ctx
        self.worker = worker
        self.records = records
        self.attempts = FileAttempts(ctx, self._ledger_put)
        self.leases = Leases(ctx)

    def process(
        self, key: str, version_id: str | None = None, landed_at: float | None = None, deadline: Deadline | None = None
    ) -> dict[str, Any]:
        """Merge one landed behaviour file into its users' state and re-score them; return the run summary.

        Raises RunInterrupted after writing a checkpoint when `deadline` leaves no room for another chunk.
        """
        started = self.ctx.clock()
        landed_at = started if landed_at is None else landed_at
        source = self.ctx.bucket.url(key)
        refused = self._refusal(key, source)
        if refused is not None:
            return self.records.finish(refused, started)
        try:
            obj = self.ctx.bucket.open(key, version_id)
        except ObjectGoneError as exc:
            return self.records.finish({"status": "gone", "source": source, "why": str(exc)}, started)
        run_id = object_run_id(self.ctx.bucket.bucket, key, obj.identity)
        summary: dict[str, Any] = {
            "run_id": run_id,
            "trigger": "s3",
            "source": source,
            "object": {"key": key, "etag": obj.etag, "version_id": obj.version_id, "bytes": obj.size},
        }
        if obj.identity != obj.etag:
            summary["object"]["identity"] = obj.identity
        if not self._done_before(obj, summary):
            if self._handed_over(obj, summary, landed_at, deadline):
                obj.body.close()
                # No run record yet: the finish step writes it, and a late duplicate must never overwrite it.
                return self.records.finish(summary, started, write=False)
            # One attempt at a time: a copy of this event running now holds the run's lease (see lease.py).
            done = self.leases.exclusive(
                summary, deadline or Deadline(), lambda held: self._leased(obj, summary, landed_at, started, held)
            )
            if done is not None:
                return done
        obj.body.close()
        return self.records.finish(summary, started, write=False)

    def _handed_over(self, obj: S3Object, summary: dict[str, Any], landed_at: float, deadline: Deadline | None) -> bool:
        """Return True, the summary saying so, when the file went to the backfill (too large for one invocation)."""
        seconds_left = None if deadline is None else deadline.seconds_left
        return hand_over(self.ctx, obj, summary, landed_at, seconds_left)

    def _done_before(self, obj: S3Object, summary: dict[str, Any]) -> bool:
        """Return True, the summary marked duplicate, when a run of the object's content has finished already."""
        previous = self._finished(obj, summary)
        if previous is not None:
            if obj.identity != obj.etag:  # a re-upload under a new ETag: the sweep's listing knows only that
                self.ctx.tables.ledger.put(obj.key, obj.etag, previous)
            summary.update(status="duplicate", first_run=previous)
        return previous is not None

    def _leased(
        self, obj: S3Object, summary: dict[str, Any], landed_at: float, started: float, deadline: LeasedDeadline
    ) -> dict[str, Any]:
        """Process the object under the run's lease; return the run summary."""
        key, source = obj.key, summary["source"]
        # A copy that finished between the first look at the ledger and the lease leaves nothing to do.
        if self._done_before(obj, summary):
            obj.body.close()
            return self.records.finish(summary, started, write=False)
        attempt = self.attempts.start(obj, summary)
        if attempt is None:  # it failed too many attempts: quarantined instead
            return self.records.finish(summary, started)
        with attempt:  # the file's isolation boundary: a failure is counted there, then raised for Lambda to retry
            result = self._read(obj, source, landed_at, summary)
            if result is None:
                return self.records.finish(summary, started)
            self._merge_all(key, result, landed_at, summary, deadline)
            deadline.lease.renew()  # an attempt overtaken after its last chunk leaves the bookkeeping to the taker
            return self._complete(obj, summary, started)

    def _complete(self, obj: S3Object, summary: dict[str, Any], started: float) -> dict[str, Any]:
        """Finish the bookkeeping in an order a redo can complete: run record, checkpoint gone, then the ledger."""
        self.records.finish(summary, started)
        self.ctx.bucket.checkpoint_delete(summary["run_id"])
        # The ledger's record comes last: once it is there the run is done and nothing of it is left to write.
        # Even an incomplete run is recorded: its state is merged, and `replay` finishes what is left.
        self._ledger_put(obj, ledger_record(summary))
        return summary

    def _finished(self, obj: S3Object, summary: dict[str, Any]) -> dict[str, Any] | None:
        """Return the ledger record of a finished run of this content (None if none), first completing its
        bookkeeping when an attempt died between the run record and the ledger record."""
        bucket, run_id = self.ctx.bucket, summary["run_id"]
        ledger = self._ledger_get(obj)
        record = bucket.run_record_get(run_id)
        if record is not None and record.get("status") not in FINAL:
            record = None  # a run that has not finished yet
        if ledger is None and record is None:
            return None
        if record is None:  # a ledger written before its run record (an earlier version's order, or a quarantine)
            bucket.run_record_put(run_id, {**summary, **ledger, "repaired": "from its ledger record"})
        bucket.checkpoint_delete(run_id)
        if ledger is None:
            ledger = ledger_record(record)
            self._ledger_put(obj, ledger)
        return ledger

    def _ledger_get(self, obj: S3Object) -> dict[str, Any] | None:
        """Return the ledger record of the object's content: under its identity, else under its ETag."""
        ledger = self.ctx.tables.ledger
        found = ledger.find(obj.key, obj.identity)
        if found is None and obj.identity != obj.etag:
            found = ledger.find(obj.key, obj.etag)  # recorded before identities, or this very upload
        return found

    def _ledger_put(self, obj: S3Object, record: dict[str, Any]) -> None:
        """Record the object's content as processed, under its ETag too when that differs (listings carry only it)."""
        for name in dict.fromkeys((obj.etag, obj.identity)):
            self.ctx.tables.ledger.put(obj.key, name, record)

    def _refusal(self, key: str, source: str) -> dict[str, Any] | None:
        """Return the summary of a key that is not processed at all, or None when it may be."""
        if not key.startswith(self.ctx.settings.incoming_prefix):
            return {"status": "ignored", "source": source, "why": "outside the incoming prefix"}
        trick = key_problem(key)
        if trick is None:
            return None
        # Keys are copied into other prefixes (rejected/, quarantine/); one that reads as a path elsewhere
        # is refused before anything is read or written.
        self.ctx.logger.warning("key refused", extra={"source": source, "why": trick})
        return {"status": "refused", "source": source, "why": trick}

    def _read(self, obj: S3Object, source: str, landed_at: float, summary: dict[str, Any]) -> ReadResult | None:
        """Read the file's events and keep its rejected rows; quarantine it (and return None) if unreadable."""
        try:
            result = read_events(
                obj.body,
                source,
                not_after=landed_at + self.ctx.settings.future_tolerance_seconds,
                max_decompressed_bytes=self.ctx.settings.max_decompressed_bytes,
                max_memory_bytes=self.ctx.settings.file_memory_budget_bytes,
            )
        except UnreadableFileError as exc:
            self._quarantine(obj, source, summary, exc)
            return None
        finally:
            obj.body.close()
        summary["rows"] = result.row_counts()
        if result.rows_rejected:
            summary["rejected_file"] = self.ctx.bucket.put_rejected(obj.key, result.rejects.to_bytes())
            self.ctx.logger.warning(
                "rows rejected",
                extra={
                    "run_id": summary["run_id"],
                    "source": source,
                    "rejected_by_reason": summary["rows"]["rejected_by_reason"],
                },
            )
        result.rejects.close()
        return result

    def _quarantine(self, obj: S3Object, source: str, summary: dict[str, Any], exc: UnreadableFileError) -> None:
        """Move an unreadable file aside, with its reason, and record it so it is never retried in a loop."""
        run_id = summary["run_id"]
        # The full text may quote the file (a header-less file's first row); it goes only beside the
        # quarantined file, while the log and the run summary get the description without it.
        dest = self.ctx.bucket.quarantine(
            obj.key, obj.version_id, {"source": source, "reason": str(exc), "run_id": run_id}
        )
        summary.update(status=exc.status, reason=exc.safe_message, moved_to=dest)
        self.ctx.logger.warning("file rejected", extra={"run_id": run_id, "source": source, "reason": exc.safe_message})
        self._ledger_put(obj, {"run_id": run_id, "status": exc.status})

    def _merge_all(
        self, key: str, result: ReadResult, landed_at: float, summary: dict[str, Any], deadline: Deadline
    ) -> str:
        """Merge, score and deliver the file's users chunk by chunk; fill the summary; return the run's as_of."""
        events = result.events
        delta = build_state(events)
        snapshot = key.startswith(self.ctx.settings.snapshot_prefix)
        summary["mode"] = "snapshot" if snapshot else "delta"
        as_of = users_as_of(delta, landed_at, self.ctx.settings.future_tolerance_seconds)
        run, checkpoint = self.records.resume(summary["run_id"], summary["source"])
        run.events = EventIndex(events)
        run.file_locales = events.locales
        self._chunks(run, delta, snapshot, as_of, int(checkpoint.get("done", 0)), summary, deadline)
        # The run's as_of is its users' latest; `landed_at` is everyone's whose events are not past it.
        self.records.summarise(run, summary, max(as_of.values(), default=landed_at), ("users_new", "users_scored"))
        summary["landed_at"] = iso_time(landed_at)
        summary["users_as_of_past_landing"] = sum(t > landed_at for t in as_of.values())
        self.records.settle(run, summary)
        if result.rows_read and not result.rows_accepted:
            self._all_rejected(summary)
        return summary["as_of"]

    def _all_rejected(self, summary: dict[str, Any]) -> None:
        """Mark a file none of whose rows could be used: its own status, a warning line and a metric."""
        summary["status"] = "rejected"
        rows = summary["rows"]
        extra = {
            "run_id": summary["run_id"],
            "source": summary["source"],
            "rejected_by_reason": rows["rejected_by_reason"],
        }
        self.ctx.logger.warning("every row rejected", extra=extra)
        self.ctx.metrics.add_metric(name=FILES_ALL_ROWS_REJECTED, unit=COUNT, value=1)

    def _chunks(
        self,
        run: Run,
        delta: StateBatch,
        snapshot: bool,
        as_of: dict[str, float],
        done: int,
        summary: dict[str, Any],
        deadline: Deadline,
    ) -> None:
        """Work through the chunks after the `done` ones, checkpointing after each (the last too: a redo that finds
        every chunk done goes straight to the bookkeeping)."""
        size = self.ctx.settings.chunk_users
        latest = {"as_of": max(as_of.values(), default=0.0)}
        n_chunks = -(-len(delta) // size)
        summary["chunks"] = n_chunks
        if done:
            summary["resumed_after_chunks"] = done
        for i in range(done, n_chunks):
            if not deadline.room_for_another():
                self.records.checkpoint(run, i, latest)
                raise RunInterrupted(run.run_id, i, n_chunks)
            deadline.start_chunk()
            users = delta.user_ids[i * size : (i + 1) * size]
            rows = delta.values[i * size : (i + 1) * size]
            self.worker.merge_score_deliver(run, users, rows, snapshot, {uid: as_of[uid] for uid in users})
            deadline.end_chunk()
            self.records.checkpoint(run, i + 1, latest)
