"""The backfill state machine's workers: split the file into ranges, read each range, score each shard.

Each worker is safe to run again: the split writes the same plan, a range the same parts, and a shard resumes
from its own checkpoint, merging under the FILE's run id, so `applied_runs` stops a second merge and message ids
are the ones one invocation would have given. Each writes its summary last: its presence says the step is done.
"""

from __future__ import annotations

import io
import json
from typing import Any

from chalicelib.errors import ChurnGuardError, RetryableError, UnreadableFileError
from chalicelib.ingest import read_events
from chalicelib.retention.outcomes import EventIndex
from chalicelib.runs.backfill import parts, routing, store
from chalicelib.runs.backfill.cuts import cut_file
from chalicelib.runs.backfill.store import WorkingSet
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.runs.file_run import users_as_of
from chalicelib.runs.lease import LeasedDeadline, Leases
from chalicelib.runs.message_cap import SharedMessageCap
from chalicelib.runs.records import DeadLetters, Run, RunRecords
from chalicelib.scoring.state import StateBatch, build_state

# The most a gzip file may inflate to in the split's one pass (about 100 MB/s from S3 in one invocation).
SPLIT_MAX_BYTES = 64 << 30


class BackfillPlanMissing(ChurnGuardError):
    """A worker was started for a run whose split never wrote its plan."""


class RangeNotReady(RetryableError):
    """A shard needs a range that has not finished (it failed, or still runs): redrive the range first."""


class ShardBusy(RetryableError):
    """Another invocation holds this shard's lease; the state machine tries again later."""


class BackfillWorkers:
    """Split, range and shard steps of one backfill, over the run's working objects."""

    def __init__(self, ctx: RunContext, worker: ChunkWorker, records: RunRecords) -> None:
        self.ctx = ctx
        self.worker = worker
        self.records = records

    def working(self, run_id: str) -> WorkingSet:
        """Return the working objects of a run."""
        return WorkingSet(self.ctx.bucket, run_id)

    def plan(self, run_id: str) -> dict[str, Any]:
        """Return a run's plan; raise BackfillPlanMissing when the split has not written one."""
        plan = self.working(run_id).get_json(store.PLAN)
        if plan is None:
            raise BackfillPlanMissing(f"backfill {run_id} has no plan: its split did not finish")
        return plan

    # ---- split ---------------------------------------------------------------------------------------
    def split(self, job: dict[str, Any]) -> dict[str, Any]:
        """Cut the object (its exact version) into ranges; write the plan and the maps' item lists; return both keys."""
        work = self.working(job["run_id"])
        plan = work.get_json(store.PLAN)
        if plan is None:
            plan = self._cut(job, work)
            work.put_json(store.PLAN, plan)  # last: a split that died before it is simply done again
        return {
            "run_id": job["run_id"],
            "ranges": len(plan.get("pieces", [])),
            "shards": plan.get("shards", 0),
            "ranges_key": self.ctx.bucket.backfill_put(job["run_id"], store.RANGE_ITEMS, _items(plan, "range")),
            "shards_key": self.ctx.bucket.backfill_put(job["run_id"], store.SHARD_ITEMS, _items(plan, "shard")),
        }

    def _cut(self, job: dict[str, Any], work: WorkingSet) -> dict[str, Any]:
        """Return the plan of a file: its ranges (a gzip file's written out decompressed) and its shard count."""
        obj = self.ctx.bucket.open(job["key"], job.get("version_id"))
        size = routing.range_bytes(self.ctx.settings)

        def keep(r: int, prefix: bytes, data: bytes) -> None:
            work.put(store.input_part(r), prefix + data)

        try:
            cuts = cut_file(obj.body, job["source"], size, SPLIT_MAX_BYTES, emit=keep)
        except UnreadableFileError as exc:
            return {**job, "pieces": [], "shards": 0, "unreadable": _refusal(exc)}
        finally:
            obj.body.close()
        pieces = [{"start": p.start, "length": p.length, "first_line": p.first_line} for p in cuts.pieces]
        shards = routing.shard_count(self.ctx.settings, len(pieces)) if pieces else 0
        return {
            **job,
            "format": cuts.fmt,
            "gzip": cuts.gzip,
            "prefix_bytes": len(cuts.prefix),
            "prefix_lines": cuts.prefix_lines,
            "total_bytes": cuts.total_bytes,
            "pieces": pieces,
            "shards": shards,
        }

    # ---- one range -----------------------------------------------------------------------------------
    def read_range(self, item: dict[str, Any]) -> dict[str, Any]:
        """Validate one range, write its rejected rows and its events by shard; return (and keep) its summary."""
        run_id, r = item["run_id"], int(item["range"])
        work = self.working(run_id)
        done = work.get_json(store.range_summary(r))
        if done is not None:
            return done
        plan = self.plan(run_id)
        piece = plan["pieces"][r]
        rejects = parts.OffsetRejects(piece["first_line"] - 1 - plan["prefix_lines"])
        try:
            result = read_events(
                io.BytesIO(self._range_bytes(plan, r)),
                plan["source"],
                fmt=plan["format"],
                rejects=rejects,
                not_after=plan["landed_at"] + self.ctx.settings.future_tolerance_seconds,
                max_decompressed_bytes=SPLIT_MAX_BYTES,
                max_memory_bytes=self.ctx.settings.file_memory_budget_bytes,
            )
        except UnreadableFileError as exc:  # this range alone: reported, and the shards go on without it
            summary = {"range": r, "status": exc.status, "reason": exc.safe_message}
            self.ctx.logger.warning("backfill range unreadable", extra={"run_id": run_id, **summary})
            work.put_json(store.range_summary(r), summary)
            return summary
        try:
            for s, events in enumerate(parts.by_shard(result.events, plan["shards"])):
                work.put(store.range_part(r, s), parts.encode(events))
            if result.rows_rejected:
                work.put(store.range_rejected(r), rejects.to_bytes())
        finally:
            rejects.close()
        summary = {"range": r, "status": "read", "rows": result.row_counts()}
        work.put_json(store.range_summary(r), summary)
        return summary

    def _range_bytes(self, plan: dict[str, Any], r: int) -> bytes:
        """Return the header prefix and the bytes of range `r`."""
        if plan["gzip"]:
            data = self.working(plan["run_id"]).get(store.input_part(r))
            if data is None:
                raise BackfillPlanMissing(f"backfill {plan['run_id']}: range {r} was never decompressed")
            return data
        piece, bucket = plan["pieces"][r], self.ctx.bucket
        prefix = bucket.read_range(plan["key"], plan.get("version_id"), 0, plan["prefix_bytes"])
        start = piece["start"]
        return prefix + bucket.read_range(plan["key"], plan.get("version_id"), start, start + piece["length"])

    # ---- one shard -----------------------------------------------------------------------------------
    def score_shard(self, item: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """Merge, score and deliver one shard's users; return (and keep) its summary.

        Raises RunInterrupted after a checkpoint when out of time, ShardBusy when another invocation holds the
        shard, RangeNotReady when a range has not finished: the state machine retries each.
        """
        run_id, s = item["run_id"], int(item["shard"])
        work = self.working(run_id)
        done = work.get_json(store.shard_summary(s))
        if done is not None:
            return done
        plan = self.plan(run_id)
        lease = {"run_id": f"{run_id}.shard-{s:05d}"}
        result = Leases(self.ctx).exclusive(lease, deadline or Deadline(), lambda held: self._shard(plan, s, held))
        if result is None:
            raise ShardBusy(f"backfill {run_id} shard {s}: {lease.get('status')}, held by {lease.get('held_by')}")
        return result

    def _shard(self, plan: dict[str, Any], s: int, deadline: LeasedDeadline) -> dict[str, Any]:
        """Score one shard under its lease, from its checkpoint on; return its summary."""
        work = self.working(plan["run_id"])
        events = parts.concat(self._shard_events(plan, s))
        delta = build_state(events)
        landed_at = plan["landed_at"]
        as_of = users_as_of(delta, landed_at, self.ctx.settings.future_tolerance_seconds)
        run = self.shard_run(plan, s)
        checkpoint = work.get_json(store.shard_checkpoint(s)) or {}
        run.totals = checkpoint.get("totals", {})
        run.dead = DeadLetters.from_json(checkpoint.get("dead"))
        run.events = EventIndex(events)
        run.file_locales = events.locales
        snapshot = plan["key"].startswith(self.ctx.settings.snapshot_prefix)
        chunks = self._chunks(run, s, delta, snapshot, as_of, int(checkpoint.get("done", 0)), deadline)
        deadline.lease.renew()  # overtaken after its last chunk: the taker writes the summary
        summary = {
            "shard": s,
            "status": "done",
            "users": len(delta),
            "chunks": chunks,
            "as_of": max(as_of.values(), default=landed_at),
            "users_as_of_past_landing": sum(t > landed_at for t in as_of.values()),
            "totals": run.totals,
            "dead": run.dead.to_json(run.run_id),
        }
        work.put_json(store.shard_summary(s), summary)
        return summary

    def shard_run(self, plan: dict[str, Any], s: int) -> Run:
        """Return a new Run of one shard: the FILE's run id and source, so state, items and messages are the file's.

        Every shard takes its messages from the run's one shared counter, so the shards together claim at most the
        playbook's cap per run, as one invocation would.
        """
        return Run(
            plan["run_id"],
            plan["source"],
            opt_outs=self.records.opt_outs(),
            rescored_through=self.ctx.bucket.rescored_through(),
            budget=SharedMessageCap.of_run(self.ctx, plan["run_id"], f"shard-{s:05d}"),
        )

    def _shard_events(self, plan: dict[str, Any], s: int) -> list[Any]:
        """Return the shard's events of every range read, in range order; raise RangeNotReady if one is unfinished."""
        work, found = self.working(plan["run_id"]), []
        for r in range(len(plan["pieces"])):
            summary = work.get_json(store.range_summary(r))
            if summary is None:
                raise RangeNotReady(f"backfill {plan['run_id']}: range {r} has not finished")
            if summary["status"] != "read":
                continue  # an unreadable range: reported by the finish step
            data = work.get(store.range_part(r, s))
            if data is None:
                raise RangeNotReady(f"backfill {plan['run_id']}: range {r} has no part for shard {s}")
            found.append(parts.decode(data))
        return found

    def _chunks(
        self,
        run: Run,
        s: int,
        delta: StateBatch,
        snapshot: bool,
        as_of: dict[str, float],
        done: int,
        deadline: LeasedDeadline,
    ) -> int:
        """Work through the shard's chunks after the `done` ones, checkpointing after each; return how many."""
        size = self.ctx.settings.chunk_users
        n_chunks = -(-len(delta) // size)
        for i in range(done, n_chunks):
            if not deadline.room_for_another():
                self._checkpoint(run, s, i)
                raise RunInterrupted(f"{run.run_id}.shard-{s:05d}", i, n_chunks)
            deadline.start_chunk()
            run.budget.start_chunk(i)  # a redo of this chunk is the same chunk, with the same grants
            users = delta.user_ids[i * size : (i + 1) * size]
            rows = delta.values[i * size : (i + 1) * size]
            self.worker.merge_score_deliver(run, users, rows, snapshot, {uid: as_of[uid] for uid in users})
            deadline.end_chunk()
            self._checkpoint(run, s, i + 1)
        return n_chunks

    def _checkpoint(self, run: Run, s: int, done: int) -> None:
        """Write where the shard stands: chunks done, totals and dead letters so far."""
        record = {"done": done, "totals": run.totals, "dead": run.dead.to_json(run.run_id)}
        self.working(run.run_id).put_json(store.shard_checkpoint(s), record)


def _items(plan: dict[str, Any], kind: str) -> bytes:
    """Return a map's item list as the JSON array its ItemReader reads: one small object per range or shard."""
    count = len(plan.get("pieces", [])) if kind == "range" else plan.get("shards", 0)
    return json.dumps([{"run_id": plan["run_id"], kind: i} for i in range(count)]).encode()


def _refusal(exc: UnreadableFileError) -> dict[str, Any]:
    """Return what the finish step needs to refuse a file the split could not read."""
    return {"status": exc.status, "reason": exc.reason, "line": exc.line}
