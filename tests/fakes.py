"""In-memory fakes of the run's ports (chalicelib.runs.ports): the same conditions, none of the I/O.

Each fake keeps what a real store keeps and answers as the adapter does: versioned conditional writes that
report WRITTEN / CONFLICT / FAILED, message claims marked sent only while they are still the item's claim,
scans in pages with a resume key. Faults are planted by naming users or message ids.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from chalicelib.lookup.ports import TierPage
from chalicelib.lookup.tier_index import KEY_ATTRIBUTE
from chalicelib.runs.applied_runs import AppliedRuns
from chalicelib.runs.ports import (
    CONFLICT,
    FAILED,
    SENT,
    WRITTEN,
    ClosedFile,
    LeaseHolder,
    Listed,
    Missed,
    ObjectGoneError,
    RiskWrite,
    S3Object,
    Sent,
    Started,
    StateWrite,
    StoredRisks,
    StoredStates,
    TableStats,
)
from chalicelib.scoring.state import StateBatch, empty_rows


class FakeBucket:
    """A bucket: landed objects, and every record a run keeps, in dictionaries."""

    def __init__(self, name: str = "bucket") -> None:
        self.bucket = name
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.list_calls = 0  # listing calls, as S3 would count them (1,000 keys a call)
        self.quarantined: dict[str, dict[str, Any]] = {}
        self.rejected: dict[str, bytes] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.dead_letters: dict[str, dict[str, Any]] = {}
        # Each file of closed exposures (by run and the exposures' names): its current version and exposures
        self.closed: dict[tuple[str, frozenset[tuple[str, str]]], tuple[str, list[dict[str, Any]]]] = {}
        self.archive: dict[str, tuple[list[dict[str, Any]], int]] = {}  # exposures and version, by day
        self.archive_writes = 0
        self.archive_reads = 0
        self.archive_counts: tuple[Any, int] | None = None  # saved counts of settled days, and their version
        self.archive_counts_writes = 0
        self.archive_cursor: str | None = None
        self.conditional_writes = True  # False: as a botocore that predates S3's conditional writes
        self.lift: dict[str, Any] | None = None
        self.reports: dict[str, tuple[dict[str, Any], str]] = {}  # content and page, by run id and "latest"
        self.map_items: dict[str, bytes] = {}  # what the state machines' item readers read, by key
        self.opt_outs: dict[str, bytes] = {}
        self.checkpoint_history: list[dict[str, Any]] = []
        self.attempts: dict[str, dict[str, Any]] = {}
        self.unreadable: set[str] = set()  # keys whose every read fails, as a poison file's would
        self.backfill: dict[str, bytes] = {}  # a backfill's working objects, by "<run_id>/<name>"
        self.rescore_mark: float | None = None
        self.schedule_writes: dict[str, Any] | None = None  # runs/_schedule-writes.json

    def land(self, key: str, data: bytes, at: datetime | None = None) -> str:
        """Put an object; return its etag."""
        # By default a day before the run tests' clock (2026-06-01): old enough for the sweep's listing, and young
        # enough for the ledger to remember it.
        self.objects[key] = (data, at or datetime(2026, 5, 31, tzinfo=UTC))
        return _etag(data)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def open(self, key: str, version_id: str | None = None) -> S3Object:
        if key not in self.objects:
            raise ObjectGoneError(f"{self.url(key)} no longer exists")
        if key in self.unreadable:
            raise OSError(f"{self.url(key)}: the read failed")
        data = self.objects[key][0]
        return S3Object(key, io.BytesIO(data), _etag(data), version_id, len(data))

    def listing(self, prefix: str, after: str | None, max_keys: int) -> tuple[list[Listed], str | None]:
        keys = [k for k in sorted(self.objects) if k.startswith(prefix) and (after is None or k > after)]
        self.list_calls += max(1, -(-min(len(keys), max_keys) // 1000))
        found = [Listed(k, _etag(self.objects[k][0]), self.objects[k][1]) for k in keys[:max_keys]]
        return found, (found[-1].key if len(keys) > max_keys else None)

    def quarantine(self, key: str, version_id: str | None, reason: dict[str, Any]) -> str:
        self.objects.pop(key)
        self.quarantined[key] = _copy(reason)
        return f"quarantine/{key}"

    def put_rejected(self, key: str, data: bytes) -> str:
        self.rejected[key] = data
        return self.url(f"rejected/{key}.csv")

    def opt_out_list(self, key: str) -> bytes | None:
        return self.opt_outs.get(key)

    def run_record_get(self, run_id: str) -> dict[str, Any] | None:
        return _copy(self.runs.get(run_id))

    def run_record_put(self, run_id: str, record: dict[str, Any]) -> None:
        self.runs[run_id] = _copy(record)

    def checkpoint_get(self, run_id: str) -> dict[str, Any] | None:
        return _copy(self.checkpoints.get(run_id))

    def checkpoint_put(self, run_id: str, record: dict[str, Any]) -> None:
        self.checkpoints[run_id] = _copy(record)
        self.checkpoint_history.append(_copy(record))

    def checkpoint_delete(self, run_id: str) -> None:
        self.checkpoints.pop(run_id, None)

    def attempts_get(self, run_id: str) -> dict[str, Any] | None:
        return _copy(self.attempts.get(run_id))

    def attempts_put(self, run_id: str, record: dict[str, Any]) -> None:
        self.attempts[run_id] = _copy(record)

    def attempts_delete(self, run_id: str) -> None:
        self.attempts.pop(run_id, None)

    def dead_letters_get(self, run_id: str) -> dict[str, Any] | None:
        return _copy(self.dead_letters.get(run_id))

    def dead_letters_put(self, run_id: str, record: dict[str, Any]) -> str:
        self.dead_letters[run_id] = _copy(record)
        return self.dead_letters_url(run_id)

    def dead_letters_url(self, run_id: str) -> str:
        return self.url(f"dead-letter/{run_id}.json")

    def dead_letters_delete(self, run_id: str) -> None:
        self.dead_letters.pop(run_id, None)

    def closed_put(self, run_id: str, exposures: list[dict[str, Any]]) -> None:
        names = frozenset((e["user_id"], e["exposed_at"]) for e in exposures)
        # As S3's ETag, the version is the content's digest: the same bytes written again keep it
        self.closed[(run_id, names)] = (_etag(json.dumps(exposures, sort_keys=True).encode()), _copy(exposures))

    def closed_all(self) -> Iterator[dict[str, Any]]:
        for found in self.closed_read_many([item.key for item in self.closed_listed()]):
            if found is not None:
                yield from found.exposures

    def closed_listed(self, start_after: str | None = None) -> Iterator[Listed]:
        self.list_calls += 1
        for key in sorted(self._closed_by_key()):
            if start_after is None or key > start_after:
                yield Listed(key, "etag", datetime(2026, 5, 31, tzinfo=UTC))

    def closed_read(self, key: str) -> ClosedFile | None:
        name = self._closed_by_key().get(key)
        if name is None:
            return None
        version, exposures = self.closed[name]
        return ClosedFile(key, version, _copy(exposures))

    def closed_delete(self, file: ClosedFile) -> bool:
        name = self._closed_by_key().get(file.key)
        if name is not None:
            if self.closed[name][0] != file.version:
                return False  # written again since it was read, as S3's If-Match answers
            del self.closed[name]
        return True

    def _closed_by_key(self) -> dict[str, tuple[str, frozenset[tuple[str, str]]]]:
        return {_closed_key(*name): name for name in self.closed}

    def closed_read_many(self, keys: list[str]) -> list[ClosedFile | None]:
        return [self.closed_read(k) for k in keys]

    def closed_delete_many(self, files: list[ClosedFile]) -> list[bool]:
        return [self.closed_delete(f) for f in files]

    def archive_cursor_get(self) -> str | None:
        return self.archive_cursor

    def archive_cursor_put(self, after: str | None) -> None:
        self.archive_cursor = after

    def makes_conditional_writes(self) -> bool:
        return self.conditional_writes

    def every_closed(self) -> list[dict[str, Any]]:
        """Return (for tests) every closed exposure kept, in files or archived, each copy."""
        return [*self.closed_all(), *(e for exposures, _ in self.archive.values() for e in _copy(exposures))]

    def archive_days(self) -> list[str]:
        """Return (for tests) the days the archive holds, oldest first."""
        return sorted(self.archive)

    def archive_get(self, day: str) -> tuple[list[dict[str, Any]], str | None]:
        self.archive_reads += 1
        if day not in self.archive:
            return [], None
        exposures, version = self.archive[day]
        return _copy(exposures), str(version)

    def archive_versions(self) -> dict[str, str]:
        return {day: str(version) for day, (_, version) in self.archive.items()}

    def archive_counts_get(self) -> tuple[Any, str | None]:
        if self.archive_counts is None:
            return None, None
        counts, version = self.archive_counts
        return _copy(counts), f"counts-{version}"

    def archive_counts_put(self, counts: dict[str, Any], etag: str | None) -> bool:
        current = None if self.archive_counts is None else f"counts-{self.archive_counts[1]}"
        if current != etag:
            return False
        self.archive_counts_writes += 1
        self.archive_counts = (_copy(counts), self.archive_counts_writes)
        return True

    def archive_put(self, day: str, exposures: list[dict[str, Any]], etag: str | None) -> bool:
        current = self.archive.get(day)
        if (None if current is None else str(current[1])) != etag:
            return False  # another write came first, as S3's If-Match / If-None-Match answers
        self.archive_writes += 1
        self.archive[day] = (_copy(exposures), self.archive_writes)
        return True

    def lift_report_put(self, report: dict[str, Any]) -> str:
        self.lift = _copy(report)
        return self.url("reports/lift.json")

    def run_report_put(self, run_id: str, content: dict[str, Any], html: str) -> str:
        for name in (run_id, "latest"):
            self.reports[name] = (_copy(content), html)
        return self.url(f"reports/{run_id}.html")

    def run_report_latest(self) -> dict[str, Any] | None:
        return _copy(self.reports["latest"][0]) if "latest" in self.reports else None

    def file_run_records(self, since: float | None, limit: int) -> tuple[list[dict[str, Any]], int]:
        # Written since `since`: a record's finished_at stands for the time S3 would list it as last modified.
        after = "" if since is None else datetime.fromtimestamp(since, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        found = [
            r for k, r in sorted(self.runs.items()) if k.startswith("obj-") and str(r.get("finished_at", "")) >= after
        ]
        return _copy(found[:limit]), max(0, len(found) - limit)

    def read_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        if key not in self.objects:
            raise ObjectGoneError(f"{self.url(key)} no longer exists")
        return self.objects[key][0][start:end]

    def backfill_put(self, run_id: str, name: str, data: bytes) -> str:
        self.backfill[f"{run_id}/{name}"] = bytes(data)
        return f"backfill/{run_id}/{name}"

    def backfill_get(self, run_id: str, name: str) -> bytes | None:
        return self.backfill.get(f"{run_id}/{name}")

    def backfill_delete(self, run_id: str, names: list[str]) -> None:
        for name in names:
            self.backfill.pop(f"{run_id}/{name}", None)

    def rescored_through(self) -> float | None:
        return self.rescore_mark

    def mark_rescored(self, at: float) -> None:
        self.rescore_mark = max(at, self.rescore_mark or at)

    def schedule_writes_get(self) -> dict[str, Any] | None:
        return _copy(self.schedule_writes)

    def schedule_writes_put(self, measured: dict[str, Any]) -> None:
        self.schedule_writes = _copy(measured)

    def segments_put(self, run_id: str, segments: list[dict[str, Any]]) -> str:
        key = f"map-items/{run_id}/segments.json"
        self.map_items[key] = json.dumps(segments).encode()
        return key


class FakeLeases:
    """Run leases under the adapter's conditions, atomic under a lock so threads can race for them."""

    def __init__(self) -> None:
        self.held: dict[str, LeaseHolder] = {}
        self.taken: list[tuple[str, str]] = []  # (run id, holder) of every lease taken
        self._lock = threading.Lock()

    def take(self, run_id: str, holder: str, until: float, now: float) -> LeaseHolder | None:
        with self._lock:
            current = self.held.get(run_id)
            if current is not None and current.until >= now and current.holder != holder:
                return current
            self.held[run_id] = LeaseHolder(holder, until)
            self.taken.append((run_id, holder))
            return None

    def renew(self, run_id: str, holder: str, until: float) -> LeaseHolder | None:
        with self._lock:
            current = self.held.get(run_id, LeaseHolder("", 0.0))
            if current.holder != holder:
                return current
            self.held[run_id] = LeaseHolder(holder, until)
            return None

    def release(self, run_id: str, holder: str) -> None:
        with self._lock:
            if self.held.get(run_id, LeaseHolder("", 0.0)).holder == holder:
                del self.held[run_id]


class FakeCaps:
    """Run message counters and their chunks' grants, atomic under a lock so threads can race for them."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.grants: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def grant(self, run_id: str, chunk: str, user_id: str, cap: int) -> bool | None:
        with self._lock:
            held = self.grants.setdefault((run_id, chunk), set())
            if user_id in held:
                return True
            if self.counters.get(run_id, 0) >= cap:
                return None
            self.counters[run_id] = self.counters.get(run_id, 0) + 1
            held.add(user_id)
            return True

    def granted(self, run_id: str, chunk: str) -> frozenset[str]:
        with self._lock:
            return frozenset(self.grants.get((run_id, chunk), ()))

    def claimed(self, run_id: str) -> int:
        return self.counters.get(run_id, 0)


def scan_segment(user_id: str, total_segments: int) -> int:
    """Return the parallel-scan segment a user's item falls in, as DynamoDB's hash of the key decides (here md5)."""
    return int(hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest(), 16) % total_segments


class FakeLedger(dict[tuple[str, str], dict[str, Any]]):
    """The ledger: (key, content) -> record, the first record of a content standing; and the listing cursor."""

    def __init__(self) -> None:
        super().__init__()
        self.after: str | None = None
        self.puts = 0

    def find(self, key: str, content: str) -> dict[str, Any] | None:
        return _copy(self.get((key, content)))

    def put(self, key: str, content: str, record: dict[str, Any]) -> None:
        self.puts += 1
        self.setdefault((key, content), _copy(record))

    def cursor(self) -> str | None:
        return self.after

    def set_cursor(self, after: str | None) -> None:
        self.after = after


class FakeMissed:
    """The failed-delivery queues: bodies waiting by queue, each received hidden until deleted or `reappear()`."""

    def __init__(self) -> None:
        self.waiting: dict[str, str] = {}  # receipt -> body
        self.hidden: dict[str, str] = {}
        self.deleted: list[str] = []
        self._n = 0

    def add(self, body: str | dict[str, Any], queue: str = "files-dlq") -> str:
        self._n += 1
        receipt = f"{queue}#{self._n}"
        self.waiting[receipt] = body if isinstance(body, str) else json.dumps(body)
        return receipt

    def receive(self, limit: int, hide_seconds: int) -> list[Missed]:
        taken = list(self.waiting.items())[:limit]
        for receipt, _ in taken:
            self.hidden[receipt] = self.waiting.pop(receipt)
        return [Missed(receipt.split("#")[0], receipt, body) for receipt, body in taken]

    def delete(self, message: Missed) -> None:
        self.hidden.pop(message.receipt, None)
        self.deleted.append(message.receipt)

    def reappear(self) -> None:
        """Make every received, undeleted message visible again (its visibility timeout ran out)."""
        self.waiting.update(self.hidden)
        self.hidden.clear()


class FakeTables:
    """State and risk items with versions; users named in `fail_states` / `fail_risks` fail every write."""

    def __init__(self, retention_seconds: int = 730 * 86400) -> None:
        self.retention_seconds = retention_seconds
        self.leases = FakeLeases()
        self.caps = FakeCaps()
        self.item_count: int | None = None  # what DescribeTable says (None: the true count)
        self.warm_write_units: int | None = None
        self.ledger = FakeLedger()
        self.states: dict[str, dict[str, Any]] = {}
        self.risks: dict[str, dict[str, Any]] = {}
        self.fail_states: set[str] = set()
        self.fail_risks: set[str] = set()
        # Users whose next write is beaten by another run's: the stored version moves on first.
        self.race_states: set[str] = set()
        # Users whose items no read returns (BatchGetItem keeping their keys unprocessed through every retry).
        self.unread: set[str] = set()
        self.retries: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def expiry(self, last_event: float) -> int:
        return math.ceil(last_event) + self.retention_seconds

    def get_states(self, user_ids: list[str]) -> StoredStates:
        self.calls["get_states"] += 1
        stored = self._stored([uid for uid in user_ids if uid in self.states and uid not in self.unread])
        stored.unread = [uid for uid in user_ids if uid in self.unread]
        return stored

    def scan_states(
        self,
        start_key: dict[str, Any] | None,
        page_items: int,
        *,
        as_of: float,
        segment: int | None = None,
        total_segments: int | None = None,
    ) -> Iterator[tuple[StoredStates, dict[str, Any] | None]]:
        ids = sorted(self.states)
        if total_segments is not None:
            ids = [uid for uid in ids if scan_segment(uid, total_segments) == segment]
        if start_key:
            ids = [uid for uid in ids if uid > start_key["user_id"]]
        for start in range(0, len(ids), page_items):
            page = ids[start : start + page_items]
            live = [uid for uid in page if self.states[uid]["expires_at"] >= as_of]
            stored = self._stored(live)
            stored.expired = len(page) - len(live)
            more = start + page_items < len(ids)
            yield stored, ({"user_id": page[-1]} if more else None)

    def get_risks(self, user_ids: list[str]) -> StoredRisks:
        items = {uid: _copy(self.risks[uid]) for uid in user_ids if uid in self.risks and uid not in self.unread}
        return StoredRisks(items, [uid for uid in user_ids if uid in self.unread])

    def state_table_stats(self) -> TableStats:
        return TableStats(len(self.states) if self.item_count is None else self.item_count, self.warm_write_units)

    def scan_exposures(self, segment: int | None = None, total_segments: int | None = None) -> list[dict[str, Any]]:
        keys = ("user_id", "exposed_at", "exposure_group", "exposure_tier", "exposure_action", "returned_at")
        items = [i for i in self.risks.values() if "exposed_at" in i]
        if total_segments is not None:
            items = [i for i in items if scan_segment(i["user_id"], total_segments) == segment]
        return [{k: i[k] for k in keys if k in i} for i in items]

    def put_states(self, writes: list[StateWrite]) -> dict[str, str]:
        return {w.user_id: self._put_state(w) for w in writes}

    def put_risks(self, writes: list[RiskWrite]) -> dict[str, str]:
        return {w.user_id: self._put_risk(w) for w in writes}

    def confirm_sent(self, claims: list[tuple[str, str]]) -> int:
        confirmed = 0
        for uid, mid in claims:
            item = self.risks.get(uid)
            if item is not None and item.get("contact_message_id") == mid:
                item["contact_status"] = SENT
                item["risk_version"] += 1
                confirmed += 1
        return confirmed

    def events_of(self, user_id: str) -> int:
        """Return how many events a user's stored state counts."""
        return self.states[user_id]["events"]

    def _put_state(self, w: StateWrite) -> str:
        if w.user_id in self.fail_states:
            return FAILED
        if w.user_id in self.race_states:
            self.race_states.discard(w.user_id)
            # Another run wrote first (an empty delta): the stored version moves on under this writer.
            blank = {"row": empty_rows(1)[0], "version": 0, "applied": b"", "locale": None, "events": 0}
            stored = self.states.setdefault(w.user_id, {**blank, "expires_at": self.expiry(w.last_event)})
            stored["version"] += 1
            return CONFLICT
        if self.states.get(w.user_id, {}).get("version", 0) != w.expected:
            return CONFLICT
        self.states[w.user_id] = {
            "row": np.frombuffer(w.blob, dtype="<f8").copy(),
            "version": w.version,
            "applied": w.applied.to_bytes(),
            "locale": w.locale,
            "events": w.events,
            "expires_at": self.expiry(w.last_event),
        }
        return WRITTEN

    def _put_risk(self, w: RiskWrite) -> str:
        if w.user_id in self.fail_risks:
            return FAILED
        if int(self.risks.get(w.user_id, {}).get("risk_version", 0)) != w.expected:
            return CONFLICT
        self.risks[w.user_id] = {
            **_copy(w.item),
            "risk_version": w.expected + 1,
            "expires_at": self.expiry(w.last_event),
        }
        return WRITTEN

    def _stored(self, ids: list[str]) -> StoredStates:
        rows = np.stack([self.states[uid]["row"] for uid in ids]) if ids else empty_rows(0)
        return StoredStates(
            batch=StateBatch(ids, rows),
            versions={uid: self.states[uid]["version"] for uid in ids},
            applied={uid: AppliedRuns.load(self.states[uid]["applied"]) for uid in ids},
            locales={uid: self.states[uid]["locale"] for uid in ids if self.states[uid]["locale"]},
        )


class FakeQueues:
    """One list of bodies per destination; message ids in `fail_ids` fail every time, those in `refuse_ids` are
    refused (with the reason given) as SQS refuses a body it cannot take."""

    batch_size = 10

    def __init__(self, queue_names: dict[str, str]) -> None:
        self.queue_names = dict(queue_names)
        self.sent: dict[str, list[dict[str, Any]]] = {dest: [] for dest in queue_names}
        self.fail_ids: set[str] = set()
        self.refuse_ids: dict[str, str] = {}
        self.retries: Counter[str] = Counter()

    def send(self, tier: str, messages: list[dict[str, Any]]) -> Sent:
        failed = [m for m in messages if m["message_id"] in self.fail_ids]
        refused = [(m, self.refuse_ids[m["message_id"]]) for m in messages if m["message_id"] in self.refuse_ids]
        gone = self.fail_ids | set(self.refuse_ids)
        self.sent[tier] += [_copy(m) for m in messages if m["message_id"] not in gone]
        return Sent(len(messages) - len(failed) - len(refused), failed, refused)

    def bodies(self) -> list[dict[str, Any]]:
        """Return every message sent, whatever its queue."""
        return [m for sent in self.sent.values() for m in sent]


class FakeWorkflows:
    """Deployed state machines that record each execution started, one per name, as Step Functions keeps them."""

    def __init__(self, machines: tuple[str, ...] = ("backfill", "schedule")) -> None:
        self.machines = machines
        self.executions: dict[tuple[str, str], dict[str, Any]] = {}

    def available(self, machine: str) -> bool:
        return machine in self.machines

    def start(self, machine: str, name: str, payload: dict[str, Any]) -> Started:
        arn = f"arn:aws:states:eu-west-1:123456789012:execution:{machine}:{name}"
        new = (machine, name) not in self.executions
        self.executions.setdefault((machine, name), _copy(payload))
        return Started(arn, new)


class FakeRiskReads:
    """The lookup's reader (chalicelib.lookup.ports.RiskReader) over a dict of risk items (FakeTables.risks will do).

    Answers as DynamoDB does: only the attributes asked for (numbers as stored: Decimal from the real table), the
    tier index sparse (items without its key are in no query) and in user id order, at most `page_items` items a
    call (DynamoDB's 1 MB page), a resume key when more
    may follow. `queries` counts the calls.
    """

    def __init__(self, risks: dict[str, dict[str, Any]], page_items: int = 1000) -> None:
        self.risks = risks
        self.page_items = page_items
        self.queries = 0

    def get_risk(self, user_id: str, attributes: tuple[str, ...]) -> dict[str, Any] | None:
        item = self.risks.get(user_id)
        if item is None or "risk_tier" not in item:
            return None
        return {k: copy.deepcopy(item[k]) for k in attributes if k in item}

    def query_tier(self, key: str, after: str | None, limit: int, attributes: tuple[str, ...]) -> TierPage:
        self.queries += 1
        ids = sorted(uid for uid, item in self.risks.items() if item.get(KEY_ATTRIBUTE) == key)
        ids = [uid for uid in ids if after is None or uid > after]
        page = ids[: min(limit, self.page_items)]
        items = [{k: copy.deepcopy(self.risks[uid][k]) for k in attributes if k in self.risks[uid]} for uid in page]
        more = len(page) < len(ids) or len(page) == limit
        return TierPage(items, page[-1] if page and more else None)


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _copy(value: Any) -> Any:
    """Return a deep copy as a store would hand it back (through JSON, numbers and strings only)."""
    return None if value is None else json.loads(json.dumps(value, default=str))


def _closed_key(run_id: str, names: frozenset[tuple[str, str]]) -> str:
    """Return the key of a file of closed exposures, as unique as the bucket's (a run and the exposures' names)."""
    return f"outcomes/closed/{run_id}/{sorted(names)}"
