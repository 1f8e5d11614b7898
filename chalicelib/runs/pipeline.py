"""One scoring job from source to sinks: a landed behaviour file, the scheduled re-score, or a replay.

Every effect is safe to repeat. A run works through its users in chunks; after each chunk it writes a
checkpoint, so a redo (an event delivered again, a Lambda retry, the schedule's sweep) continues where
the last attempt stopped. Within the chunk in flight, the state item says which runs it already holds
(no double merge), the risk item only takes a score at least as new (no roll-back), and the message
claim on the risk item lets one run send a given message once (no duplicate messages).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from chalicelib.aws.bucket import (
    DEAD_LETTER_PREFIX,
    QUARANTINE_PREFIX,
    REJECTED_PREFIX,
    RUNS_PREFIX,
    BehaviourBucket,
    ObjectGoneError,
    ledger_key,
)
from chalicelib.aws.queues import BATCH as SQS_BATCH
from chalicelib.aws.queues import RetentionQueues
from chalicelib.aws.tables import (
    CONFLICT,
    FAILED,
    PENDING,
    WRITTEN,
    BehaviourTables,
    RiskWrite,
    StateWrite,
    risk_item,
)
from chalicelib.errors import InputError, UnreadableFileError
from chalicelib.ingest import parse_timestamp, read_events
from chalicelib.observability import logger
from chalicelib.retention.messages import build_message, validate_message
from chalicelib.retention.outcomes import HOLDOUT, TREATED, EventIndex, exposure_from_item, lift_report
from chalicelib.retry import backoff_delays, sleep
from chalicelib.runs import applied_runs
from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.scoring.events import EVENT_TYPES
from chalicelib.scoring.scorer import Scorer, Scores, iso_time
from chalicelib.scoring.state import StateBatch, build_state, col, empty_rows, merge_rows
from chalicelib.settings import Settings

MESSAGE_TIERS = ("high", "medium")
# Users per chunk: the unit of checkpointing, of reads (BatchGetItem takes 100) and of concurrent writes.
CHUNK_USERS = 1000
# Rounds of re-reading and re-writing users whose conditional write lost a race, before giving up on them.
MAX_WRITE_ROUNDS = 8
FINAL = ("succeeded", "incomplete", "replayed")
# The message claim on a risk item: carried over when a score replaces the item without a new message.
CONTACT_ATTRS = ("contact_message_id", "contact_status", "contact_run_id", "contact_claimed_at", "contact_as_of")
# The user's latest exposure (message sent, or withheld as holdout) and when they came back after it.
EXPOSURE_ATTRS = ("exposed_at", "exposure_group", "exposure_tier", "exposure_action", "returned_at")
CLOSED_PREFIX = "outcomes/closed/"
LIFT_REPORT_KEY = "reports/lift.json"


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


def object_run_id(bucket: str, key: str, etag: str) -> str:
    """Return the run id of one object content: the same on every redelivery."""
    return "obj-" + hashlib.sha256(f"{bucket}\x1f{key}\x1f{etag}".encode()).hexdigest()[:20]


def schedule_run_id(at: float) -> str:
    """Return the run id of the scheduled run at epoch time `at`."""
    return "sched-" + datetime.fromtimestamp(at, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


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
        mode = "score" if delta is None else ("snapshot" if snapshot else "delta")
        blob = None if delta is None else base64.b64encode(delta.astype("<f8").tobytes()).decode()
        self.users.append({"user_id": user_id, "mode": mode, "as_of": as_of, "delta": blob})

    def to_json(self, run_id: str) -> dict[str, Any]:
        return {"run_id": run_id, "users": self.users, "messages": self.messages}

    @classmethod
    def from_json(cls, record: dict[str, Any] | None) -> DeadLetters:
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
    events: EventIndex | None = None  # the file's events, to see who came back after an exposure
    file_locales: dict[str, tuple[float, str]] = field(default_factory=dict)  # from the file's locale column
    locales: dict[str, str] = field(default_factory=dict)  # locale of the users being scored now
    closed: list[dict[str, Any]] = field(default_factory=list)  # exposures replaced by newer ones

    def add(self, counts: dict[str, Any]) -> None:
        _add_counts(self.totals, counts)

    def count(self, *path: str, n: int = 1) -> None:
        node = self.totals.setdefault("delivery", {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = node.get(path[-1], 0) + n


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
    def process_object(
        self,
        key: str,
        version_id: str | None = None,
        landed_at: float | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        """Merge one landed behaviour file into its users' state and re-score them; return the run summary.

        Raises RunInterrupted after writing a checkpoint when `deadline` leaves no room for another chunk.
        """
        started = self.clock()
        deadline = deadline or Deadline()
        landed_at = started if landed_at is None else landed_at
        source = f"s3://{self.bucket.bucket}/{key}"
        if not key.startswith(self.settings.incoming_prefix):
            return self._finish({"status": "ignored", "source": source, "why": "outside the incoming prefix"}, started)
        trick = key_problem(key)
        if trick is not None:
            # Keys are copied into other prefixes (rejected/, quarantine/); one that reads as a path elsewhere
            # is refused before anything is read or written.
            logger.warning("key refused", extra={"source": source, "why": trick})
            return self._finish({"status": "refused", "source": source, "why": trick}, started)
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
            # The full text may quote the file (a header-less file's first row); it goes only beside the
            # quarantined file, while the log and the run summary get the description without it.
            self.bucket.put_json(dest + ".reason.json", {"source": source, "reason": str(exc), "run_id": run_id})
            summary.update(status="unreadable", reason=exc.safe_message, moved_to=dest)
            logger.warning("file rejected", extra={"run_id": run_id, "source": source, "reason": exc.safe_message})
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
            logger.warning(
                "rows rejected",
                extra={"run_id": run_id, "source": source, "rejected_by_reason": summary["rows"]["rejected_by_reason"]},
            )
        result.rejects.close()

        events = result.events
        delta = build_state(events)
        snapshot = key.startswith(self.settings.snapshot_prefix)
        summary["mode"] = "snapshot" if snapshot else "delta"
        latest = float(events.time.max()) if len(events) else landed_at
        as_of = max(landed_at, latest)
        n_chunks = -(-len(delta) // CHUNK_USERS)
        summary["chunks"] = n_chunks

        run, checkpoint = self._resume(run_id, source)
        run.events = EventIndex(events)
        run.file_locales = events.locales
        done = int(checkpoint.get("done", 0))
        if done:
            summary["resumed_after_chunks"] = done
        for i in range(done, n_chunks):
            if not deadline.room_for_another():
                self._checkpoint(run, i, {"as_of": as_of})
                raise RunInterrupted(run_id, i, n_chunks)
            deadline.start_chunk()
            users = delta.user_ids[i * CHUNK_USERS : (i + 1) * CHUNK_USERS]
            rows = delta.values[i * CHUNK_USERS : (i + 1) * CHUNK_USERS]
            self._merge_score_deliver(run, users, rows, snapshot, as_of)
            deadline.end_chunk()
            if i + 1 < n_chunks:
                self._checkpoint(run, i + 1, {"as_of": as_of})
        summary.update(run.totals)
        summary["as_of"] = iso_time(as_of)
        for name in ("users_new", "users_scored"):
            summary.setdefault(name, 0)
        summary.setdefault("messages_sent", dict.fromkeys(self.queues.queue_names, 0))
        summary["model_version"] = self.scorer.model.model_version
        self._settle(run, summary)
        # Even an incomplete run is recorded: its state is merged, and `replay` finishes what is left.
        self.bucket.ledger_put(key, obj.etag, {"run_id": run_id, "status": summary["status"], "as_of": iso_time(as_of)})
        self.bucket.checkpoint_delete(run_id)
        return self._finish(summary, started)

    # ---- the schedule ---------------------------------------------------------------------
    def run_schedule(self, at: float | None = None, deadline: Deadline | None = None) -> dict[str, Any]:
        """Process missed files, then re-score every known user as of `at` (default now); return the summary.

        Raises RunInterrupted after writing a checkpoint when `deadline` leaves no room for another page.
        """
        started = self.clock()
        deadline = deadline or Deadline()
        at = started if at is None else at
        run_id = schedule_run_id(at)
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "schedule", "source": "schedule"}
        previous = self.bucket.find_json(f"{RUNS_PREFIX}{run_id}.json")
        if previous is not None and previous.get("status") in FINAL:
            summary.update(status="duplicate", first_run={"run_id": run_id, "status": previous["status"]})
            return self._finish(summary, started, write=False)
        summary["swept_files"] = self._sweep(started, deadline)
        run, checkpoint = self._resume(run_id, "schedule")
        pages_done = int(checkpoint.get("done", 0))
        if pages_done:
            summary["resumed_after_chunks"] = pages_done
        page_start = checkpoint.get("scan_key")
        for stored, resume in self.tables.scan_states(page_start, CHUNK_USERS, as_of=at):
            if not deadline.room_for_another():
                self._checkpoint(run, pages_done, {"scan_key": page_start})
                raise RunInterrupted(run_id, pages_done, None)
            deadline.start_chunk()
            # Users past their retention are forgotten, even while TTL has yet to delete their items.
            run.add({"expired_skipped": stored.expired})
            run.locales = {uid: loc[1] for uid, loc in stored.locales.items()}
            self._score_deliver(run, stored.batch, stored.versions, dict.fromkeys(stored.batch.user_ids, at))
            deadline.end_chunk()
            pages_done += 1
            page_start = resume
            if resume:
                self._checkpoint(run, pages_done, {"scan_key": resume})
        summary.update(run.totals)
        summary["as_of"] = iso_time(at)
        summary["model_version"] = self.scorer.model.model_version
        summary.setdefault("users_scored", 0)
        summary.setdefault("messages_sent", dict.fromkeys(self.queues.queue_names, 0))
        self._settle(run, summary)
        self.bucket.checkpoint_delete(run_id)
        # Once a day is enough for the lift report: it scans the whole risk table.
        self.bucket.put_json(LIFT_REPORT_KEY, self.lift_report(as_of=at))
        summary["lift_report"] = f"s3://{self.bucket.bucket}/{LIFT_REPORT_KEY}"
        return self._finish(summary, started)

    # ---- did retention work? -------------------------------------------------------------------
    def lift_report(
        self, since: float | None = None, as_of: float | None = None, horizon_days: float | None = None
    ) -> dict[str, Any]:
        """Return win-back rates of treated and holdout users, per risk tier and action, with the lift."""
        exposures = [e for item in self.bucket.list(CLOSED_PREFIX) for e in self.bucket.get_json(item.key)]
        exposures += [exposure_from_item(item) for item in self.tables.scan_exposures()]
        horizon = horizon_days if horizon_days is not None else self.scorer.model.horizon_days
        return lift_report(exposures, horizon, self.clock() if as_of is None else as_of, since)

    # ---- finishing a run that left dead letters ------------------------------------------------
    def replay(self, run_id: str) -> dict[str, Any]:
        """Redo the users and resend the messages a run left in its dead-letter record; return the summary."""
        started = self.clock()
        key = f"{DEAD_LETTER_PREFIX}{run_id}.json"
        record = self.bucket.find_json(key)
        if record is None:
            raise InputError(f"s3://{self.bucket.bucket}/{key}: run {run_id} has nothing left to replay")
        left = DeadLetters.from_json(record)
        run = Run(run_id, "replay", opt_outs=self._opt_outs())
        run.closed = self.bucket.find_json(f"{CLOSED_PREFIX}{run_id}.json") or []
        for (mode, as_of), entries in _group_users(left.users).items():
            users = [e["user_id"] for e in entries]
            if mode == "score":
                stored = self.tables.get_states(users)
                run.locales = {uid: loc[1] for uid, loc in stored.locales.items()}
                self._score_deliver(run, stored.batch, stored.versions, dict.fromkeys(stored.batch.user_ids, as_of))
            else:
                rows = np.stack([np.frombuffer(base64.b64decode(e["delta"]), dtype="<f8") for e in entries])
                self._merge_score_deliver(run, users, rows, mode == "snapshot", as_of)
        self._resend(run, left.messages)
        summary: dict[str, Any] = {"run_id": run_id, "trigger": "replay", **run.totals}
        if run.dead:
            self._settle(run, summary)
        else:
            self._save_closed(run)
            self.bucket.delete(key)
            summary["status"] = "replayed"
        stored_run = self.bucket.find_json(f"{RUNS_PREFIX}{run_id}.json") or {"run_id": run_id}
        stored_run["status"] = summary["status"]
        stored_run.setdefault("replays", []).append({k: v for k, v in summary.items() if k != "run_id"})
        self.bucket.put_json(f"{RUNS_PREFIX}{run_id}.json", stored_run)
        summary["duration_s"] = round(self.clock() - started, 3)
        logger.info("replay summary", extra={"summary": summary})
        return summary

    # ---- one chunk: merge, score, deliver --------------------------------------------------------
    def _merge_score_deliver(self, run: Run, users: list[str], rows: np.ndarray, snapshot: bool, as_of: float) -> None:
        retries_before = self._retries()
        batch, versions = self._merge_states(run, users, rows, snapshot, as_of)
        # A file may bring users whose latest event is older than the retention (a backfill of years): their
        # state is kept for TTL to delete, but they are forgotten as the schedule forgets them, not contacted.
        last_seen = batch.values[:, col("last_seen")]
        live = [uid for uid, seen in zip(batch.user_ids, last_seen, strict=True) if self.tables.expiry(seen) >= as_of]
        if len(live) < len(batch):
            run.add({"expired_skipped": len(batch) - len(live)})
            batch = batch.subset(live)
        self._score_deliver(run, batch, versions, dict.fromkeys(batch.user_ids, as_of), retries_before)

    def _merge_states(
        self, run: Run, users: list[str], rows: np.ndarray, snapshot: bool, as_of: float
    ) -> tuple[StateBatch, dict[str, int]]:
        """Merge each user's delta into their stored state under optimistic locking; return what is stored."""
        pending = {uid: rows[i] for i, uid in enumerate(users)}
        final: dict[str, np.ndarray] = {}
        versions: dict[str, int] = {}
        locales: dict[str, str] = {}
        delays = backoff_delays()
        now = self.clock()
        for _ in range(MAX_WRITE_ROUNDS):
            ids = list(pending)
            stored = self.tables.get_states(ids)
            base = stored.batch.subset(ids).values
            delta = np.stack([pending[uid] for uid in ids])
            merged = delta if snapshot else merge_rows(base, delta)
            writes, rows_of = [], {}
            for j, uid in enumerate(ids):
                applied = stored.applied.get(uid, [])
                version = stored.versions.get(uid, 0)
                if applied_runs.was_applied(applied, run.run_id):
                    run.count("duplicates_suppressed", "state")
                    final[uid], versions[uid] = base[j], version
                    if uid in stored.locales:
                        locales[uid] = stored.locales[uid][1]
                    del pending[uid]
                    continue
                new_list = applied_runs.record(
                    applied, run.run_id, now, self.settings.applied_runs_keep, self.settings.applied_runs_max_age
                )
                # The latest row naming a locale wins, whichever file it came in: the order does not matter.
                known = [
                    loc for loc in (run.file_locales.get(uid), None if snapshot else stored.locales.get(uid)) if loc
                ]
                locale = max(known) if known else None
                writes.append(_state_write(uid, merged[j], run.run_id, version, new_list, locale))
                rows_of[uid] = merged[j]
            outcomes = self.tables.put_states(writes)
            for w in writes:
                outcome = outcomes[w.user_id]
                if outcome == WRITTEN:
                    final[w.user_id], versions[w.user_id] = rows_of[w.user_id], w.version
                    if w.locale is not None:
                        locales[w.user_id] = w.locale[1]
                    run.add({"users_new": int(w.expected == 0)})
                elif outcome == FAILED:
                    run.dead.add_user(w.user_id, as_of, pending[w.user_id], snapshot)
                else:  # another run wrote this user since we read it: read again and merge again
                    run.count("write_conflicts")
                    continue
                del pending[w.user_id]
            if not pending:
                break
            sleep(next(delays, 0.0))
        for uid, row in pending.items():
            run.dead.add_user(uid, as_of, row, snapshot)
        ordered = [uid for uid in users if uid in final]
        values = np.stack([final[uid] for uid in ordered]) if ordered else empty_rows(0)
        run.locales = locales
        return StateBatch(ordered, values), versions

    def _score_deliver(
        self,
        run: Run,
        batch: StateBatch,
        versions: dict[str, int],
        targets: dict[str, float],
        retries_before: Counter[str] | None = None,
    ) -> None:
        """Score users, write each score unless a newer one is stored, then send and confirm their messages."""
        retries_before = self._retries() if retries_before is None else retries_before
        claimed: dict[str, list[tuple[str, dict[str, Any]]]] = {dest: [] for dest in self.queues.queue_names}
        delays = backoff_delays()
        for _ in range(MAX_WRITE_ROUNDS):
            if not len(batch):
                break
            again: dict[str, float] = {}
            for as_of, idx in _by_target(batch.user_ids, targets).items():
                part = StateBatch([batch.user_ids[i] for i in idx], batch.values[idx])
                self._score_part(run, part, versions, as_of, claimed, again)
            if not again:
                break
            # Read the users' freshest state and score them again, as of the newest time seen.
            sleep(next(delays, 0.0))
            stored = self.tables.get_states(list(again))
            run.locales.update({uid: loc[1] for uid, loc in stored.locales.items()})
            batch, targets = stored.batch, {uid: again[uid] for uid in stored.batch.user_ids}
            versions = {**versions, **stored.versions}
        else:
            for uid in batch.user_ids:
                run.dead.add_user(uid, targets[uid])
        for tier, entries in claimed.items():
            self._send(run, tier, entries)
        self._log_retries(run, retries_before)

    def _score_part(
        self,
        run: Run,
        part: StateBatch,
        versions: dict[str, int],
        as_of: float,
        claimed: dict[str, list[tuple[str, dict[str, Any]]]],
        again: dict[str, float],
    ) -> None:
        """Score users as of one time and write each score unless the stored one is newer; fill `again`."""
        scores = self.scorer.score(part, as_of)
        stored = self.tables.get_risks(part.user_ids)
        scored_at = iso_time(self.clock())
        writes, bodies, index = [], {}, {}
        held: dict[str, str] = {}  # user -> why an actionable user gets no message
        replaced: dict[str, dict[str, Any]] = {}  # user -> the exposure a new one replaces
        for i, row in enumerate(scores.rows()):
            uid = scores.user_ids[i]
            old = stored.get(uid, {})
            basis = versions.get(uid, 0)
            old_as_of, old_basis = old.get("as_of"), int(old.get("scored_state_version", 0))
            if old_as_of is not None and (old_as_of > scores.as_of or old_basis > basis):
                if old_as_of >= scores.as_of and old_basis >= basis:
                    run.count("skipped_as_older")  # the stored score already knows all this one does
                else:
                    run.count("rescored_at_newer_as_of")  # newer time there, newer state here: use both
                    again[uid] = max(as_of, parse_timestamp(old_as_of))
                continue
            item = risk_item(row, run_id=run.run_id, scored_at=scored_at, source=run.source)
            item["scored_state_version"] = basis
            item["playbook_version"] = self.scorer.playbook.version
            item.update({k: old[k] for k in (*CONTACT_ATTRS, *EXPOSURE_ATTRS) if k in old})
            returned = self._returned(run, old)
            if returned is not None:
                item["returned_at"] = returned
            # Message ids embed as_of, and a stored as_of never moves back: ids of older times cannot recur.
            claimed_now = list(old.get("contact_ids", [])) if old_as_of == scores.as_of else []
            segment = _segment(scores, i)
            body = self._message(run, scores, i, segment)
            if body is not None:
                why = self._why_not(run, old, claimed_now, body, len(bodies))
                if why is not None:
                    held[uid] = why
                    if why == "opted_out":
                        item["action"] = ""
                    body = None
            if body is not None:
                item.update(
                    contact_message_id=body["message_id"],
                    contact_status=PENDING,
                    contact_run_id=run.run_id,
                    contact_claimed_at=scored_at,
                    contact_as_of=scores.as_of,
                )
                claimed_now = list(dict.fromkeys([*claimed_now, body["message_id"]]))
                bodies[uid] = body
            item["contact_ids"] = claimed_now
            item["holdout"] = held.get(uid) == "holdout"
            group = HOLDOUT if item["holdout"] else (TREATED if uid in bodies else None)
            if group is not None and old.get("exposed_at") != scores.as_of:
                if "exposed_at" in item:
                    replaced[uid] = exposure_from_item(item)
                item.pop("returned_at", None)
                item.update(
                    exposed_at=scores.as_of,
                    exposure_group=group,
                    exposure_tier=scores.risk_tier[i],
                    exposure_action=scores.actions[i].code,
                )
            if scores.discounted is not None and scores.discounted[i]:
                item["promotion"] = scores.promotion
            if segment is not None:
                item["rfm_segment"], item["activity_cluster"] = segment["rfm"], segment["activity"]
            writes.append(RiskWrite(item, int(old.get("risk_version", 0)), float(part.values[i, col("last_seen")])))
            index[uid] = i
        outcomes = self.tables.put_risks(writes)
        counts: dict[str, Any] = {"users_scored": 0, "risk_tier": {}, "value_tier": {}, "risk_x_value": {}}
        counts.update(actions={}, suppressed={})
        if scores.promotion is not None:
            counts["promotion"] = {"name": scores.promotion, "users_discounted": 0}
        for uid, outcome in outcomes.items():
            if outcome == CONFLICT:  # another run wrote this user's risk since we read it: decide again
                run.count("write_conflicts")
                again[uid] = as_of
                continue
            if outcome == FAILED:
                run.dead.add_user(uid, as_of)
                continue
            i = index[uid]
            risk, value, action = scores.risk_tier[i], scores.value_tier[i], scores.actions[i]
            _bump(counts, "users_scored")
            _bump(counts["risk_tier"], risk)
            _bump(counts["value_tier"], value)
            _bump(counts["risk_x_value"], f"{risk}/{value}")
            if scores.discounted is not None and scores.discounted[i]:
                _bump(counts["promotion"], "users_discounted")
            if action is not None:
                _bump(counts["actions"], action.code)
            elif risk in MESSAGE_TIERS:
                _bump(counts["suppressed"], "opted_out" if scores.opted_out[i] else "no_action")
            if uid in held:
                _bump(counts["suppressed"], held[uid])
                if held[uid] == "duplicate":
                    run.count("duplicates_suppressed", "messages")
            if uid in bodies:
                # Account-manager tasks go to their own queue when one is configured; the rest to the tier's.
                manager = bodies[uid]["action"]["channel"] == "account_manager" and "account_manager" in claimed
                claimed["account_manager" if manager else risk].append((uid, bodies[uid]))
                _bump(counts, "messages_claimed")
            if uid in replaced:
                run.closed.append(replaced[uid])
        run.add(counts)

    @staticmethod
    def _returned(run: Run, old: dict[str, Any]) -> str | None:
        """Return when the user first came back after their exposure, counting this file's events too."""
        if run.events is None or "exposed_at" not in old:
            return old.get("returned_at")
        first = run.events.first_after(old["user_id"], parse_timestamp(old["exposed_at"]))
        if first is None:
            return old.get("returned_at")
        seen = iso_time(first)
        return min(seen, old["returned_at"]) if old.get("returned_at") else seen

    def _why_not(
        self, run: Run, old: dict[str, Any], claimed_now: list[str], body: dict[str, Any], claimed_here: int
    ) -> str | None:
        """Return why an actionable user gets no message now (None: send it), by the contact policy.

        Decided on the risk item that the claim is written to, under its version, so two runs at once
        cannot both contact a user.
        """
        uid, mid, tier = body["user_id"], body["message_id"], body["risk_tier"]
        if uid in run.opt_outs:
            return "opted_out"
        if old.get("contact_message_id") == mid:
            # Claimed before: this run's own pending claim is a redo after a crash (same id); else sent.
            own = old.get("contact_status") == PENDING and old.get("contact_run_id") == run.run_id
            return None if own else "duplicate"
        if mid in claimed_now:
            return "duplicate"
        playbook = self.scorer.playbook
        # The holdout keeps the same cadence as the treated: a withheld message starts a cooldown too.
        last = old.get("exposed_at") or old.get("contact_as_of")
        if last and parse_timestamp(body["as_of"]) - parse_timestamp(last) < playbook.contact_policy.cooldown_seconds(
            tier
        ):
            return "cooldown"
        if playbook.in_holdout(uid, tier):
            return "holdout"
        if run.totals.get("messages_claimed", 0) + claimed_here >= playbook.contact_policy.max_messages_per_run:
            return "run_cap"
        return None

    def _message(self, run: Run, scores: Scores, i: int, segment: dict[str, str] | None) -> dict[str, Any] | None:
        """Return the retention message of user `i`, or None when their tier or action calls for none."""
        action = scores.actions[i]
        if scores.risk_tier[i] not in MESSAGE_TIERS or action is None:
            return None
        playbook = self.scorer.playbook
        locale = run.locales.get(scores.user_ids[i], playbook.default_locale)
        text = playbook.render(
            action, locale, scores.user_ids[i], scores.risk_tier[i], scores.value_tier[i], segment and segment["rfm"]
        )
        body = build_message(
            user_id=scores.user_ids[i],
            risk_tier=scores.risk_tier[i],
            value_tier=scores.value_tier[i],
            churn_probability=float(scores.probability[i]),
            reasons=scores.reasons[i],
            action=action,
            model_version=scores.model_version,
            as_of=scores.as_of,
            run_id=run.run_id,
            source=run.source,
            playbook_version=playbook.version,
            content={"locale": locale, "text": text},
            segment=segment,
        )
        validate_message(body)
        return body

    def _send(self, run: Run, tier: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Send claimed messages to a destination's queue a batch at a time, marking each batch sent at once."""
        run.add({"messages_sent": {tier: 0}})
        for start in range(0, len(entries), SQS_BATCH):
            batch = entries[start : start + SQS_BATCH]
            sent, failed = self.queues.send(tier, [body for _, body in batch])
            run.add({"messages_sent": {tier: sent}})
            lost = {body["message_id"] for body in failed}
            channels = Counter(body["action"]["channel"] for _, body in batch if body["message_id"] not in lost)
            run.add({"messages_by_channel": dict(channels)})
            run.dead.messages += [{"tier": tier, "body": body} for body in failed]
            # Marked right after each batch: a crash in between resends at most this batch, same message ids.
            delivered = [(uid, body["message_id"]) for uid, body in batch if body["message_id"] not in lost]
            confirmed = self.tables.confirm_sent(delivered)
            if confirmed < len(delivered):
                run.count("claims_unconfirmed", n=len(delivered) - confirmed)

    def _resend(self, run: Run, messages: list[dict[str, Any]]) -> None:
        """Resend dead-lettered messages whose claim is still pending; drop the ones superseded or sent."""
        by_tier: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for entry in messages:
            body = entry["body"]
            contact = self.tables.get_risks([body["user_id"]]).get(body["user_id"], {})
            if contact.get("contact_message_id") == body["message_id"] and contact.get("contact_status") == PENDING:
                by_tier.setdefault(entry["tier"], []).append((body["user_id"], body))
            else:
                run.count("superseded_messages")
        for tier, entries in by_tier.items():
            self._send(run, tier, entries)

    # ---- checkpoints, dead letters, summaries --------------------------------------------------
    def _resume(self, run_id: str, source: str) -> tuple[Run, dict[str, Any]]:
        """Return the run as its last checkpoint left it (a fresh one when there is none) and the checkpoint."""
        checkpoint = self.bucket.checkpoint_get(run_id)
        run = Run(run_id, source, opt_outs=self._opt_outs())
        if checkpoint is None:
            return run, {}
        run.totals = checkpoint.get("totals", {})
        run.dead = DeadLetters.from_json(self.bucket.find_json(f"{DEAD_LETTER_PREFIX}{run_id}.json"))
        run.closed = self.bucket.find_json(f"{CLOSED_PREFIX}{run_id}.json") or []
        return run, checkpoint

    def _opt_outs(self) -> frozenset[str]:
        """Return the user ids of the opt-out list in the bucket (one per line, optional `user_id` header)."""
        data = self.bucket.find_bytes(self.settings.opt_out_key)
        if data is None:
            return frozenset()
        lines = (line.strip().strip('"') for line in data.decode("utf-8", errors="replace").splitlines())
        return frozenset(line for line in lines if line and line != "user_id")

    def _save_closed(self, run: Run) -> None:
        """Keep the exposures this run replaced, with their outcomes, for the lift report."""
        if run.closed:
            self.bucket.put_json(f"{CLOSED_PREFIX}{run.run_id}.json", run.closed)

    def _checkpoint(self, run: Run, done: int, extra: dict[str, Any]) -> None:
        self._save_closed(run)
        if run.dead:
            self.bucket.put_json(f"{DEAD_LETTER_PREFIX}{run.run_id}.json", run.dead.to_json(run.run_id))
        record = {"run_id": run.run_id, "done": done, "totals": run.totals, "at": iso_time(self.clock()), **extra}
        self.bucket.checkpoint_put(run.run_id, record)
        logger.info("checkpoint", extra={"run_id": run.run_id, "done": done})

    def _settle(self, run: Run, summary: dict[str, Any]) -> None:
        """Mark the run succeeded, or keep what failed as a dead-letter record and mark it incomplete."""
        self._save_closed(run)
        delivery = summary.setdefault("delivery", {})
        delivery["dead_lettered"] = {"users": len(run.dead.users), "messages": len(run.dead.messages)}
        if not run.dead:
            summary["status"] = "succeeded"
            return
        key = f"{DEAD_LETTER_PREFIX}{run.run_id}.json"
        self.bucket.put_json(key, run.dead.to_json(run.run_id))
        summary["status"] = "incomplete"
        summary["dead_letter"] = {
            "key": f"s3://{self.bucket.bucket}/{key}",
            "users": len(run.dead.users),
            "messages": len(run.dead.messages),
            "replay": f"python -m chalicelib replay {run.run_id}",
        }
        logger.warning("run incomplete", extra={"run_id": run.run_id, "dead_letter": summary["dead_letter"]})

    def _sweep(self, now: float, deadline: Deadline) -> list[dict[str, Any]]:
        """Process every incoming file that has no ledger entry and is older than the minimum age."""
        done = self.bucket.ledger_keys()
        swept = []
        for item in self.bucket.list(self.settings.incoming_prefix):
            if ledger_key(item.key, item.etag) in done:
                continue
            if now - item.last_modified.timestamp() < self.settings.sweep_min_age_seconds:
                continue  # its own S3 trigger is probably still running
            result = self.process_object(item.key, None, item.last_modified.timestamp(), deadline)
            swept.append({"key": item.key, "run_id": result.get("run_id"), "status": result["status"]})
        return swept

    def _retries(self) -> Counter[str]:
        return self.tables.retries + self.queues.retries

    def _log_retries(self, run: Run, before: Counter[str]) -> None:
        """Add the retries since `before` to the run, with one log line for the burst."""
        burst = self._retries() - before
        if not burst:
            return
        for op, n in burst.items():
            run.count("retries", op, n=n)
        logger.warning("retries", extra={"run_id": run.run_id, "retries": dict(burst)})

    def _finish(self, summary: dict[str, Any], started: float, write: bool = True) -> dict[str, Any]:
        summary["duration_s"] = round(self.clock() - started, 3)
        summary["finished_at"] = iso_time(self.clock())
        logger.info("run summary", extra={"summary": summary})
        if write and "run_id" in summary:
            self.bucket.put_json(f"{RUNS_PREFIX}{summary['run_id']}.json", summary)
        return summary


def _state_write(
    uid: str, row: np.ndarray, run_id: str, expected: int, applied: list[str], locale: tuple[float, str] | None
) -> StateWrite:
    events = int(row[[col(f"count_{t}") for t in EVENT_TYPES]].sum())
    return StateWrite(
        user_id=uid,
        blob=row.astype("<f8").tobytes(),
        first_seen=iso_time(row[col("first_seen")]),
        last_seen=iso_time(row[col("last_seen")]),
        last_event=float(row[col("last_seen")]),
        events=events,
        run_id=run_id,
        expected=expected,
        applied=applied,
        locale=locale,
    )


def _segment(scores: Scores, i: int) -> dict[str, str] | None:
    if scores.segment is None or scores.activity is None:
        return None
    return {"rfm": str(scores.segment[i]), "activity": str(scores.activity[i])}


def _by_target(user_ids: list[str], targets: dict[str, float]) -> dict[float, list[int]]:
    out: dict[float, list[int]] = {}
    for i, uid in enumerate(user_ids):
        out.setdefault(targets[uid], []).append(i)
    return out


def _group_users(entries: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    out: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for e in entries:
        out.setdefault((e["mode"], float(e["as_of"])), []).append(e)
    return out


def _bump(counts: dict[str, Any], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _add_counts(totals: dict[str, Any], part: dict[str, Any]) -> None:
    """Add one chunk's counts into the run totals (nested dicts of ints are summed)."""
    for key, value in part.items():
        if isinstance(value, dict):
            _add_counts(totals.setdefault(key, {}), value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            totals[key] = totals.get(key, 0) + int(value)
        else:
            totals[key] = value
