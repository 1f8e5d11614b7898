"""Finishing a run that left dead letters: redo its users and resend its messages, exactly once."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from chalicelib.errors import InputError
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.context import RunContext
from chalicelib.runs.message_cap import SharedMessageCap
from chalicelib.runs.records import DeadLetters, Run, RunRecords


class Replay:
    """Redoes what a run left in its dead-letter record through the same conditional path."""

    def __init__(self, ctx: RunContext, worker: ChunkWorker, records: RunRecords) -> None:
        self.ctx = ctx
        self.worker = worker
        self.records = records

    def run(self, run_id: str) -> dict[str, Any]:
        """Redo the users and resend the messages a run left in its dead-letter record; return the summary."""
        started = self.ctx.clock()
        record = self.ctx.bucket.dead_letters_get(run_id)
        if record is None:
            return self._nothing_left(run_id)
        left = DeadLetters.from_json(record)
        run = Run(
            run_id, "replay", opt_outs=self.records.opt_outs(), rescored_through=self.ctx.bucket.rescored_through()
        )
        stored_run = self.ctx.bucket.run_record_get(run_id) or {"run_id": run_id}
        self._share_cap(run, stored_run)
        for index, ((mode, as_of), entries) in enumerate(_group_users(left.users).items()):
            if run.budget is not None:
                run.budget.start_chunk(index)  # a replay redone after a crash is the same chunks, with their grants
            self._redo(run, mode, as_of, entries)
        self.worker.resend(run, left.messages)
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "replay", **run.totals}
        if run.dead:
            self.records.settle(run, summary)
        else:
            self.ctx.bucket.dead_letters_delete(run_id)
            summary["status"] = "replayed"
        stored_run["status"] = summary["status"]
        stored_run.setdefault("replays", []).append({k: v for k, v in summary.items() if k != "run_id"})
        self.ctx.bucket.run_record_put(run_id, stored_run)
        summary["duration_s"] = round(self.ctx.clock() - started, 3)
        self.ctx.logger.info("replay summary", extra={"summary": summary})
        return summary

    def _share_cap(self, run: Run, stored_run: dict[str, Any]) -> None:
        """Let the replay claim only what is left of the run's message cap, never the cap anew.

        A run spread over many workers took its messages from its shared counter: the replay takes from the same
        one. A run in one invocation counted them in its record: the replay counts on from there, and from the
        replays before it.
        """
        if self.ctx.tables.caps.claimed(run.run_id):
            run.budget = SharedMessageCap.of_run(self.ctx, run.run_id, "replay")
            return
        earlier = [stored_run, *stored_run.get("replays", [])]
        run.claimed_before = sum(int(r.get("messages_claimed", 0)) for r in earlier)

    def _nothing_left(self, run_id: str) -> dict[str, Any]:
        """Return the summary of a finished run with nothing left to replay; raise InputError for any other run.

        An id with no dead letters is a finished run (its record says how it ended), an unfinished one (only its
        checkpoint), or no run at all: a mistyped id must not read as a run that is done.
        """
        where = self.ctx.bucket.dead_letters_url(run_id)
        stored = self.ctx.bucket.run_record_get(run_id)
        if stored is not None:
            status = stored.get("status", "finished")
            return {"run_id": run_id, "trigger": "replay", "status": "nothing_to_replay", "run_status": status}
        if self.ctx.bucket.checkpoint_get(run_id) is not None:
            raise InputError(f"{where}: run {run_id} has not finished yet (it has a checkpoint and no record)")
        raise InputError(
            f"{where}: no run {run_id}: no run record, checkpoint or dead letters has that id "
            "(the id is in the run summary: obj-… for a file, sched-… for the schedule)"
        )

    def _redo(self, run: Run, mode: str, as_of: float, entries: list[dict[str, Any]]) -> None:
        """Re-score, or merge again and score, the users of one kind of work at one as_of."""
        users = [e["user_id"] for e in entries]
        if mode == "score":
            stored = self.ctx.tables.get_states(users)
            for uid in stored.unread:
                run.count("reads_failed")
                run.dead.add_user(uid, as_of)
            run.locales = {uid: loc[1] for uid, loc in stored.locales.items()}
            self.worker.score_deliver(run, stored.batch, stored.versions, dict.fromkeys(stored.batch.user_ids, as_of))
            return
        rows = np.stack([np.frombuffer(base64.b64decode(e["delta"]), dtype="<f8") for e in entries])
        self.worker.merge_score_deliver(run, users, rows, mode == "snapshot", dict.fromkeys(users, as_of))


def _group_users(entries: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    out: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for e in entries:
        out.setdefault((e["mode"], float(e["as_of"])), []).append(e)
    return out
