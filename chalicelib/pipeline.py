"""One scoring job from source to sinks: a landed behaviour file, or the scheduled re-score of everyone."""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from chalicelib.aws_dynamodb import BehaviourTables, decode_item, encode_item, risk_item, state_item
from chalicelib.aws_s3 import (
    DEAD_LETTER_PREFIX,
    QUARANTINE_PREFIX,
    REJECTED_PREFIX,
    RUNS_PREFIX,
    BehaviourBucket,
    ObjectGoneError,
    ledger_key,
)
from chalicelib.aws_sqs import RetentionQueues
from chalicelib.config import Settings
from chalicelib.errors import InputError, UnreadableFileError
from chalicelib.events import EVENT_TYPES
from chalicelib.messages import build_message, validate_message
from chalicelib.observability import logger
from chalicelib.reader import read_events
from chalicelib.scoring import Scorer, Scores, iso_time
from chalicelib.state import StateBatch, build_state, col, merge_rows

MESSAGE_TIERS = ("high", "medium")


@dataclass
class DeadLetters:
    """Writes and messages that still failed after their retries, kept so `replay` can finish the run."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.items or self.messages)

    def to_json(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "items": [{"table": table, "item": encode_item(item)} for table, item in self.items],
            "messages": [{"tier": tier, "body": body} for tier, body in self.messages],
        }


def object_run_id(bucket: str, key: str, etag: str) -> str:
    """Return the run id of one object content: the same on every redelivery."""
    return "obj-" + hashlib.sha256(f"{bucket}\x1f{key}\x1f{etag}".encode()).hexdigest()[:20]


def schedule_run_id(at: float) -> str:
    """Return the run id of the scheduled run at epoch time `at`."""
    return "sched-" + datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


class ScoringPipeline:
    """Merges behaviour files into state, scores users and delivers risk items and messages."""

    def __init__(
        self,
        settings: Settings,
        bucket: BehaviourBucket,
        tables: BehaviourTables,
        queues: RetentionQueues,
        scorer: Scorer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.bucket = bucket
        self.tables = tables
        self.queues = queues
        self.scorer = scorer
        self.clock = clock

    # ---- an S3 object landed -------------------------------------------------------------
    def process_object(self, key: str, version_id: str | None = None, landed_at: float | None = None) -> dict[str, Any]:
        """Merge one landed behaviour file into its users' state and re-score them; return the run summary."""
        started = self.clock()
        landed_at = started if landed_at is None else landed_at
        source = f"s3://{self.bucket.bucket}/{key}"
        if not key.startswith(self.settings.incoming_prefix):
            return self._finish({"status": "ignored", "source": source, "why": "outside the incoming prefix"}, started)
        try:
            obj = self.bucket.open(key, version_id)
        except ObjectGoneError as exc:
            return self._finish({"status": "gone", "source": source, "why": str(exc)}, started)
        run_id = object_run_id(self.bucket.bucket, key, obj.etag)
        summary: dict[str, Any] = {
            "run_id": run_id,
            "trigger": "s3",
            "source": source,
            "object": {"key": key, "etag": obj.etag, "version_id": obj.version_id, "bytes": obj.size},
        }
        previous = self.bucket.ledger_get(key, obj.etag)
        if previous is not None:
            obj.body.close()
            summary.update(status="duplicate", first_run=previous)
            return self._finish(summary, started, write=False)

        as_of_limit = landed_at + self.settings.future_tolerance_seconds
        try:
            result = read_events(
                obj.body,
                source,
                not_after=as_of_limit,
                max_decompressed_bytes=self.settings.max_decompressed_bytes,
            )
        except UnreadableFileError as exc:
            dest = QUARANTINE_PREFIX + key
            self.bucket.move(key, obj.version_id, dest)
            self.bucket.put_json(dest + ".reason.json", {"source": source, "reason": str(exc), "run_id": run_id})
            summary.update(status="unreadable", reason=str(exc), moved_to=dest)
            self.bucket.ledger_put(key, obj.etag, {"run_id": run_id, "status": "unreadable"})
            return self._finish(summary, started)
        finally:
            obj.body.close()

        summary["rows"] = {
            "read": result.rows_read,
            "scored": result.rows_accepted,
            "rejected": result.rows_rejected,
            "rejected_by_reason": dict(result.rejects.by_reason),
        }
        if result.rows_rejected:
            rejected_key = f"{REJECTED_PREFIX}{key}.csv"
            self.bucket.put_bytes(rejected_key, result.rejects.to_bytes(), "text/csv")
            summary["rejected_file"] = f"s3://{self.bucket.bucket}/{rejected_key}"
        result.rejects.close()

        events = result.events
        delta = build_state(events)
        snapshot = key.startswith(self.settings.snapshot_prefix)
        if snapshot or len(delta) == 0:
            merged = delta
            summary["users_new"] = len(delta) if snapshot else 0
        else:
            stored = self.tables.get_states(delta.user_ids)
            base = stored.subset(delta.user_ids).values
            merged = StateBatch(delta.user_ids, merge_rows(base, delta.values))
            summary["users_new"] = len(delta) - len(stored)
        summary["mode"] = "snapshot" if snapshot else "delta"
        latest = float(events.time.max()) if len(events) else landed_at
        as_of = max(landed_at, latest)
        dead = DeadLetters()
        self._score_and_deliver(merged, as_of, run_id, source, summary, state_changed=True, dead=dead)
        self._settle(run_id, summary, dead)
        # Even an incomplete run is recorded: its state is merged, and redoing it would count twice;
        # `replay` finishes what is left.
        record = {"run_id": run_id, "status": summary["status"], "as_of": iso_time(as_of)}
        self.bucket.ledger_put(key, obj.etag, record)
        return self._finish(summary, started)

    # ---- the schedule ---------------------------------------------------------------------
    def run_schedule(self, at: float | None = None) -> dict[str, Any]:
        """Process missed files, then re-score every known user as of `at` (default now); return the summary."""
        started = self.clock()
        at = started if at is None else at
        run_id = schedule_run_id(at)
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "schedule", "source": "schedule"}
        summary["swept_files"] = self._sweep(started)
        totals: dict[str, Any] = {}
        dead = DeadLetters()
        for batch in self.tables.scan_states():
            part: dict[str, Any] = {}
            self._score_and_deliver(batch, at, run_id, "schedule", part, state_changed=False, dead=dead)
            _add_counts(totals, part)
        summary.update(totals)
        summary.setdefault("users_scored", 0)
        summary.setdefault("messages_sent", dict.fromkeys(MESSAGE_TIERS, 0))
        self._settle(run_id, summary, dead)
        return self._finish(summary, started)

    # ---- finishing a run that left dead letters ------------------------------------------------
    def replay(self, run_id: str) -> dict[str, Any]:
        """Retry the writes and messages a run left in its dead-letter record; return the replay summary."""
        started = self.clock()
        key = f"{DEAD_LETTER_PREFIX}{run_id}.json"
        record = self.bucket.find_json(key)
        if record is None:
            raise InputError(f"s3://{self.bucket.bucket}/{key}: run {run_id} has nothing left to replay")
        dead = DeadLetters()
        by_table: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in record["items"]:
            by_table[entry["table"]].append(decode_item(entry["item"]))
        for table, items in by_table.items():
            dead.items += self.tables.put_items(table, items)
        by_tier: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in record["messages"]:
            by_tier[entry["tier"]].append(entry["body"])
        sent = {}
        for tier, bodies in by_tier.items():
            sent[tier], failed = self.queues.send(tier, bodies)
            dead.messages += [(tier, body) for body in failed]
        summary: dict[str, Any] = {
            "run_id": run_id,
            "trigger": "replay",
            "items_written": sum(len(v) for v in by_table.values()) - len(dead.items),
            "messages_sent": sent,
        }
        if dead:
            self._settle(run_id, summary, dead)
        else:
            self.bucket.delete(key)
            summary["status"] = "replayed"
        run = self.bucket.find_json(f"{RUNS_PREFIX}{run_id}.json") or {"run_id": run_id}
        run["status"] = summary["status"]
        run.setdefault("replays", []).append({k: v for k, v in summary.items() if k != "run_id"})
        self.bucket.put_json(f"{RUNS_PREFIX}{run_id}.json", run)
        summary["duration_s"] = round(self.clock() - started, 3)
        logger.info("replay summary", extra={"summary": summary})
        return summary

    def _settle(self, run_id: str, summary: dict[str, Any], dead: DeadLetters) -> None:
        """Mark the run succeeded, or keep what failed as a dead-letter record and mark it incomplete."""
        if not dead:
            summary["status"] = "succeeded"
            return
        key = f"{DEAD_LETTER_PREFIX}{run_id}.json"
        self.bucket.put_json(key, dead.to_json(run_id))
        summary["status"] = "incomplete"
        summary["dead_letter"] = {
            "key": f"s3://{self.bucket.bucket}/{key}",
            "items": len(dead.items),
            "messages": len(dead.messages),
            "replay": f"python -m chalicelib replay {run_id}",
        }

    def _sweep(self, now: float) -> list[dict[str, Any]]:
        """Process every incoming file that has no ledger entry and is older than the minimum age."""
        done = self.bucket.ledger_keys()
        swept = []
        for item in self.bucket.list(self.settings.incoming_prefix):
            if ledger_key(item.key, item.etag) in done:
                continue
            if now - item.last_modified.timestamp() < self.settings.sweep_min_age_seconds:
                continue  # its own S3 trigger is probably still running
            result = self.process_object(item.key, None, item.last_modified.timestamp())
            swept.append({"key": item.key, "run_id": result.get("run_id"), "status": result["status"]})
        return swept

    # ---- shared by both -------------------------------------------------------------------
    def _score_and_deliver(
        self,
        state: StateBatch,
        as_of: float,
        run_id: str,
        source: str,
        summary: dict[str, Any],
        state_changed: bool,
        dead: DeadLetters,
    ) -> None:
        scores = self.scorer.score(state, as_of)
        scored_at = iso_time(self.clock())
        risk_items = [risk_item(row, run_id=run_id, scored_at=scored_at, source=source) for row in scores.rows()]
        # State is rewritten when it changed, or when it shares the item with risk (a put replaces the item).
        state_items = _state_items(state, run_id) if (state_changed or self.tables.shared) else []
        dead.items += self.tables.write(state_items, risk_items)
        sent, suppressed = self._send(scores, run_id, source, dead)
        summary["as_of"] = scores.as_of
        summary["model_version"] = scores.model_version
        summary["users_scored"] = len(scores)
        summary.update(scores.counts())
        summary["actions"] = dict(Counter(a.code for a in scores.actions if a is not None))
        summary["messages_sent"] = sent
        summary["suppressed"] = suppressed

    def _send(
        self, scores: Scores, run_id: str, source: str, dead: DeadLetters
    ) -> tuple[dict[str, int], dict[str, int]]:
        by_tier: dict[str, list[dict[str, Any]]] = {tier: [] for tier in MESSAGE_TIERS}
        suppressed: Counter[str] = Counter()
        for i, user_id in enumerate(scores.user_ids):
            tier = scores.risk_tier[i]
            if tier not in by_tier:
                continue
            action = scores.actions[i]
            if action is None:
                suppressed["opted_out" if scores.opted_out[i] else "no_action"] += 1
                continue
            body = build_message(
                user_id=user_id,
                risk_tier=tier,
                value_tier=scores.value_tier[i],
                churn_probability=float(scores.probability[i]),
                reasons=scores.reasons[i],
                action=action,
                model_version=scores.model_version,
                as_of=scores.as_of,
                run_id=run_id,
                source=source,
            )
            validate_message(body)
            by_tier[tier].append(body)
        sent = {}
        for tier, messages in by_tier.items():
            sent[tier], failed = self.queues.send(tier, messages)
            dead.messages += [(tier, body) for body in failed]
        return sent, dict(suppressed)

    def _finish(self, summary: dict[str, Any], started: float, write: bool = True) -> dict[str, Any]:
        summary["duration_s"] = round(self.clock() - started, 3)
        summary["finished_at"] = iso_time(self.clock())
        logger.info("run summary", extra={"summary": summary})
        if write and "run_id" in summary:
            self.bucket.put_json(f"{RUNS_PREFIX}{summary['run_id']}.json", summary)
        return summary


def _state_items(state: StateBatch, run_id: str) -> list[dict[str, Any]]:
    values = state.values
    first, last = values[:, col("first_seen")], values[:, col("last_seen")]
    events = values[:, [col(f"count_{t}") for t in EVENT_TYPES]].sum(axis=1)
    return [
        state_item(uid, state.blob(i), iso_time(first[i]), iso_time(last[i]), int(events[i]), run_id)
        for i, uid in enumerate(state.user_ids)
    ]


def _add_counts(totals: dict[str, Any], part: dict[str, Any]) -> None:
    """Add one page's counts into the run totals (nested dicts of ints are summed)."""
    for key, value in part.items():
        if isinstance(value, dict):
            _add_counts(totals.setdefault(key, {}), value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + int(value)
        else:
            totals[key] = value
