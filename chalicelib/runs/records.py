"""What a run keeps about itself: its totals, its dead letters, its checkpoints and its summary."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chalicelib.retention.contact_policy import parse_opt_outs
from chalicelib.retention.outcomes import EventIndex
from chalicelib.runs.context import RunContext
from chalicelib.runs.message_cap import SharedMessageCap
from chalicelib.runs.run_metrics import publish_run
from chalicelib.scoring.scorer import iso_time

# A run in one of these states is done: a redelivered event finds it and does nothing.
FINAL = ("succeeded", "incomplete", "replayed", "rejected", "unreadable", "quarantined", "too_large")
# How many attempts' outcomes a run record lists.
MAX_ATTEMPTS_KEPT = 20


@dataclass
class DeadLetters:
    """Users and messages that still failed after their retries, kept so `replay` can finish the run.

    A user is kept as work to redo (the file's delta for that user, or just a re-score), not as the
    item that failed: redone through the same conditional path, it can never overwrite newer state.
    """

    users: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.users or self.messages)

    def add_user(self, user_id: str, as_of: float, delta: np.ndarray | None = None, snapshot: bool = False) -> None:
        """Keep a user to redo: a merge of `delta` (a snapshot or an addition), or only a re-score."""
        mode = "score" if delta is None else ("snapshot" if snapshot else "delta")
        blob = None if delta is None else base64.b64encode(delta.astype("<f8").tobytes()).decode()
        self.users.append({"user_id": user_id, "mode": mode, "as_of": as_of, "delta": blob})

    def to_json(self, run_id: str) -> dict[str, Any]:
        """Return the dead-letter record of the run."""
        return {"run_id": run_id, "users": self.users, "messages": self.messages}

    @classmethod
    def from_json(cls, record: dict[str, Any] | None) -> DeadLetters:
        """Return the dead letters of a stored record (none for None)."""
        record = record or {}
        return cls(users=list(record.get("users", [])), messages=list(record.get("messages", [])))


@dataclass
class Run:
    """The counts and leftovers of one run, carried across chunks and across checkpoints."""

    run_id: str
    source: str
    totals: dict[str, Any] = field(default_factory=dict)
    dead: DeadLetters = field(default_factory=DeadLetters)
    opt_outs: frozenset[str] = frozenset()
    # When the latest re-score of every user began: a stored score it left unwritten stands for that time too.
    rescored_through: float | None = None
    events: EventIndex | None = None  # the file's events, to see who came back after an exposure
    file_locales: dict[str, tuple[float, str]] = field(default_factory=dict)  # from the file's locale column
    locales: dict[str, str] = field(default_factory=dict)  # locale of the users being scored now
    # The run's part one worker does (a schedule segment): its checkpoint and dead letters are kept under it.
    part: str | None = None
    # The message cap shared by every worker of the run (message_cap.py); None: counted in memory, in this run.
    budget: SharedMessageCap | None = None
    # Messages the run claimed in invocations whose totals this Run does not carry (what a replay continues).
    claimed_before: int = 0

    @property
    def record_id(self) -> str:
        """Return the id the run's checkpoint and dead letters are kept under: its part's, else its own."""
        return self.part or self.run_id

    def add(self, counts: dict[str, Any]) -> None:
        """Add one step's counts into the run totals."""
        add_counts(self.totals, counts)

    def count(self, *path: str, n: int = 1) -> None:
        """Add `n` to the delivery counter at `path` (e.g. "retries", "BatchGetItem")."""
        node = self.totals.setdefault("delivery", {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = node.get(path[-1], 0) + n

    @property
    def messages_claimed(self) -> int:
        """Return how many messages the run has claimed so far."""
        return self.totals.get("messages_claimed", 0)


class RunRecords:
    """Keeps runs' checkpoints, dead letters and summaries in the bucket."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def opt_outs(self) -> frozenset[str]:
        """Return the user ids on the opt-out list the settings name (none when there is no list)."""
        return parse_opt_outs(self.ctx.bucket.opt_out_list(self.ctx.settings.opt_out_key))

    def resume(self, run_id: str, source: str, part: str | None = None) -> tuple[Run, dict[str, Any]]:
        """Return the run (or its `part`) as its last checkpoint left it (a fresh one when none) and the checkpoint."""
        bucket = self.ctx.bucket
        run = Run(
            run_id,
            source,
            opt_outs=self.opt_outs(),
            part=part,
            rescored_through=self.ctx.bucket.rescored_through(),
        )
        checkpoint = bucket.checkpoint_get(run.record_id)
        if checkpoint is None:
            return run, {}
        run.totals = checkpoint.get("totals", {})
        run.dead = DeadLetters.from_json(bucket.dead_letters_get(run.record_id))
        return run, checkpoint

    def summarise(self, run: Run, summary: dict[str, Any], as_of: float, zeros: tuple[str, ...]) -> None:
        """Put the run's totals into its summary with its as_of and model version; counts in `zeros` default to 0."""
        summary.update(run.totals)
        summary["as_of"] = iso_time(as_of)
        for name in zeros:
            summary.setdefault(name, 0)
        summary.setdefault("messages_sent", dict.fromkeys(self.ctx.queues.queue_names, 0))
        summary["model_version"] = self.ctx.scorer.model.model_version

    def checkpoint(self, run: Run, done: int, extra: dict[str, Any]) -> None:
        """Write where the run stands after `done` chunks, with what it has to keep so far."""
        if run.dead:
            self.ctx.bucket.dead_letters_put(run.record_id, run.dead.to_json(run.run_id))
        record = {"run_id": run.run_id, "done": done, "totals": run.totals, "at": iso_time(self.ctx.clock()), **extra}
        self.ctx.bucket.checkpoint_put(run.record_id, record)
        self.ctx.logger.info("checkpoint", extra={"run_id": run.record_id, "done": done})

    def settle(self, run: Run, summary: dict[str, Any]) -> None:
        """Mark the run succeeded, or keep what failed as a dead-letter record and mark it incomplete."""
        delivery = summary.setdefault("delivery", {})
        delivery["dead_lettered"] = {"users": len(run.dead.users), "messages": len(run.dead.messages)}
        if not run.dead:
            summary["status"] = "succeeded"
            return
        where = self.ctx.bucket.dead_letters_put(run.run_id, run.dead.to_json(run.run_id))
        summary["status"] = "incomplete"
        summary["dead_letter"] = {
            "key": where,
            "users": len(run.dead.users),
            "messages": len(run.dead.messages),
            "replay": f"python -m chalicelib replay {run.run_id}",
        }
        self.ctx.logger.warning("run incomplete", extra={"run_id": run.run_id, "dead_letter": summary["dead_letter"]})

    def finish(self, summary: dict[str, Any], started: float, write: bool = True) -> dict[str, Any]:
        """Time the run, log its summary and (unless `write` is False) keep it as the run's record."""
        summary["duration_s"] = round(self.ctx.clock() - started, 3)
        summary["finished_at"] = iso_time(self.ctx.clock())
        self.ctx.logger.info("run summary", extra={"summary": summary})
        publish_run(self.ctx.metrics, summary)
        if write and "run_id" in summary:
            # Read, merged and written under the run's lease: another attempt's record is added to, never erased.
            previous = self.ctx.bucket.run_record_get(summary["run_id"])
            self.ctx.bucket.run_record_put(summary["run_id"], merge_record(previous, summary))
        return summary


def merge_record(previous: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    """Return a run's record once another attempt's summary is added: its values, no count below the earlier one.

    An attempt's totals start from the last checkpoint's, so a later attempt counts the earlier ones' work again
    or redoes it; the larger count of the two is what the run did. `attempts` lists what each attempt recorded.
    """
    attempt = {k: summary[k] for k in ("status", "finished_at", "messages_sent") if k in summary}
    if previous is None:
        return {**summary, "attempts": [attempt]}
    merged = keep_larger_counts(previous, summary)
    merged["attempts"] = attempts_with(previous, attempt)
    return merged


def attempts_with(previous: dict[str, Any] | None, attempt: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the attempts a run record lists once `attempt` is added, the latest MAX_ATTEMPTS_KEPT of them."""
    return [*(previous or {}).get("attempts", []), attempt][-MAX_ATTEMPTS_KEPT:]


def keep_larger_counts(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Return `new` over `old`, nested dicts merged, each count the larger of the two."""
    merged = dict(old)
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            merged[key] = keep_larger_counts(before, value)
        elif _is_count(value) and _is_count(before):
            merged[key] = max(value, before)
        else:
            merged[key] = value
    return merged


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def bump(counts: dict[str, Any], key: str) -> None:
    """Add one to `counts[key]`."""
    counts[key] = counts.get(key, 0) + 1


def add_counts(totals: dict[str, Any], part: dict[str, Any]) -> None:
    """Add one chunk's counts into the run totals (nested dicts of ints are summed)."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_counts(totals.setdefault(key, {}), value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + int(value)
        else:
            totals[key] = value
