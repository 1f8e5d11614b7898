"""DynamoDB adapter: per-user behaviour state and current risk, written with per-item conditions.

State and risk items each carry a version: a write names the version it read and fails if another
run wrote in between (optimistic locking), and the writer reads again and decides again. State items
also list the runs merged into them (so a redo never merges twice); risk items hold the `as_of` and
state version they were scored from, and the claim of the last retention message. BatchWriteItem
takes no conditions, so these are single-item calls, run concurrently: PutItem, or UpdateItem where
state and risk share one item and a put would wipe the other half.

Both items carry `expires_at`: the user's latest event plus the retention, in epoch seconds, the
attribute DynamoDB's TTL deletes silent users by.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import boto3
import numpy as np
from boto3.dynamodb.types import Binary
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from chalicelib.aws.boto import BOTO_CONFIG, error_code, retry_attempts
from chalicelib.aws.caps import RunCapTable
from chalicelib.aws.leases import RunLeaseTable
from chalicelib.aws.ledger import LedgerTable
from chalicelib.errors import ChurnGuardError
from chalicelib.retry import Backoff
from chalicelib.runs.applied_runs import AppliedRuns
from chalicelib.runs.ports import (
    CONFLICT,
    FAILED,
    SENT,
    WRITTEN,
    RiskWrite,
    StateWrite,
    StoredRisks,
    StoredStates,
    TableStats,
)
from chalicelib.scoring.state import LAYOUT_ID, StateBatch
from chalicelib.settings import DEFAULTS

GET_BATCH = 100
# The attribute the tables' TTL is enabled on (bootstrap and the deployment's Terraform).
TTL_ATTRIBUTE = "expires_at"
# Errors that survive botocore's own retries but may clear later: the user goes to the dead-letter record.
TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
T = TypeVar("T")
R = TypeVar("R")


class StateLayoutError(ChurnGuardError):
    """A stored state written by another state layout; it must be migrated, not misread."""


class BehaviourTables:
    """Reads behaviour state and writes state and risk items, each under its own condition."""

    def __init__(
        self,
        resource: Any,
        state_table: str,
        risk_table: str,
        concurrency: int,
        retention_seconds: int,
        backoff: Backoff | None = None,
        ledger_retention_seconds: int = DEFAULTS["ledger_retention_seconds"],
    ) -> None:
        self.resource = resource
        # Clients are thread-safe, resources are not; the resource's client speaks Python types.
        self.client = resource.meta.client
        self.state_table = state_table
        self.risk_table = risk_table
        self.concurrency = max(1, concurrency)
        self.retention_seconds = retention_seconds
        self.backoff = backoff or Backoff()
        # Run leases live in the state table, under keys no user id can be (see leases.py).
        self.leases = RunLeaseTable(self.client, state_table)
        self.caps = RunCapTable(self.client, state_table, self.backoff)
        # So does the ledger of processed object contents (see ledger.py).
        self.ledger = LedgerTable(self.client, state_table, ledger_retention_seconds, time.time)
        self.calls: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def create(
        cls,
        state_table: str,
        risk_table: str,
        concurrency: int,
        retention_seconds: int,
        backoff: Backoff,
        ledger_retention_seconds: int = DEFAULTS["ledger_retention_seconds"],
    ) -> BehaviourTables:
        """Return an adapter with a default resource (honours AWS_ENDPOINT_URL)."""
        resource = boto3.resource("dynamodb", config=BOTO_CONFIG)
        return cls(resource, state_table, risk_table, concurrency, retention_seconds, backoff, ledger_retention_seconds)

    @property
    def shared(self) -> bool:
        """True when state and risk live on the same item of one table."""
        return self.state_table == self.risk_table

    def expiry(self, last_event: float) -> int:
        """Return the epoch second after which a user whose latest event was at `last_event` is forgotten."""
        # Rounded up: a user is never forgotten before the whole retention has passed.
        return math.ceil(last_event) + self.retention_seconds

    # ---- reads -----------------------------------------------------------------------------
    def get_states(self, user_ids: list[str]) -> StoredStates:
        """Return the stored state of the given users, read strongly consistent (users never seen are left out)."""
        found, unread = self._batch_get(self.state_table, user_ids, _STATE_PROJECTION)
        stored = _stored([found[uid] for uid in user_ids if "state" in found.get(uid, {})])
        stored.unread = unread
        return stored

    def scan_states(
        self,
        start_key: dict[str, Any] | None = None,
        page_items: int = 1000,
        *,
        as_of: float,
        segment: int | None = None,
        total_segments: int | None = None,
    ) -> Iterator[tuple[StoredStates, dict | None]]:
        """Yield each page of states not expired at `as_of` (with how many were), and the key resuming after it.

        With `segment` and `total_segments`, only that segment of a parallel Scan: each has its own resume key.
        """
        kwargs = {"TableName": self.state_table, "Limit": page_items, **_STATE_PROJECTION}
        kwargs.update(_segment(segment, total_segments))
        for items, resume in self._scan_pages(kwargs, start_key):
            states = [i for i in items if "state" in i]
            # An item written before expiries existed has none, and stays until a write gives it one.
            live = [i for i in states if TTL_ATTRIBUTE not in i or i[TTL_ATTRIBUTE] >= as_of]
            stored = _stored(live)
            stored.expired = len(states) - len(live)
            yield stored, resume

    def get_risks(self, user_ids: list[str]) -> StoredRisks:
        """Return the stored risk items of the given users (strongly consistent; users without one left out)."""
        found, unread = self._batch_get(self.risk_table, user_ids, {})
        items = {uid: {k: v for k, v in item.items() if k not in _STATE_ATTRS} for uid, item in found.items()}
        return StoredRisks(items, unread)

    def state_table_stats(self) -> TableStats:
        """Return the state table's item count (DynamoDB updates it about every six hours) and warm write throughput."""
        table = self._call("DescribeTable", self.client.describe_table, TableName=self.state_table)["Table"]
        warm = table.get("WarmThroughput", {}).get("WriteUnitsPerSecond")
        return TableStats(int(table.get("ItemCount", 0)), int(warm) if warm else None)

    def scan_exposures(self, segment: int | None = None, total_segments: int | None = None) -> list[dict[str, Any]]:
        """Return the exposure attributes of every risk item that has one (of one parallel-scan segment when given)."""
        kwargs = {
            "TableName": self.risk_table,
            "ProjectionExpression": "user_id, exposed_at, exposure_group, exposure_tier, exposure_action, returned_at",
            **_segment(segment, total_segments),
        }
        return [i for items, _ in self._scan_pages(kwargs) for i in items if "exposed_at" in i]

    def _batch_get(
        self, table: str, user_ids: list[str], projection: dict[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Return (user -> item, users left unread) of one table, 100 keys a call, retrying UnprocessedKeys.

        Keys still unprocessed once the backoff is spent are returned as unread, for the run to dead-letter.
        """
        found: dict[str, dict[str, Any]] = {}
        unread: list[str] = []
        for start in range(0, len(user_ids), GET_BATCH):
            keys = [{"user_id": uid} for uid in user_ids[start : start + GET_BATCH]]
            request = {table: {"Keys": keys, "ConsistentRead": True, **projection}}
            delays = self.backoff.delays()
            while request:
                resp = self._call("BatchGetItem", self.client.batch_get_item, RequestItems=request)
                found.update((item["user_id"], item) for item in resp["Responses"].get(table, []))
                request = resp.get("UnprocessedKeys") or {}
                if not request:
                    break
                delay = next(delays, None)
                if delay is None:
                    unread += [key["user_id"] for key in request[table]["Keys"]]
                    break
                self._note_retry("BatchGetItem.UnprocessedKeys")
                self.backoff.wait(delay)
        return found, unread

    def _scan_pages(
        self, kwargs: dict[str, Any], start_key: dict[str, Any] | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], dict | None]]:
        """Yield the items of each Scan page with the key that resumes after it (None after the last)."""
        kwargs = dict(kwargs)
        if start_key:
            kwargs["ExclusiveStartKey"] = start_key
        while True:
            resp = self._call("Scan", self.client.scan, **kwargs)
            resume = resp.get("LastEvaluatedKey")
            yield resp.get("Items", []), resume
            if not resume:
                return
            kwargs["ExclusiveStartKey"] = resume

    # ---- conditional writes ----------------------------------------------------------------
    def put_states(self, writes: list[StateWrite]) -> dict[str, str]:
        """Write each state if its version is unchanged; return user -> written | conflict | failed."""
        return dict(zip((w.user_id for w in writes), self._map(self._put_state, writes)))

    def put_risks(self, writes: list[RiskWrite]) -> dict[str, str]:
        """Write each risk item if its version is unchanged; return user -> written | conflict | failed."""
        return dict(zip((w.user_id for w in writes), self._map(self._put_risk, writes)))

    def confirm_sent(self, claims: list[tuple[str, str]]) -> int:
        """Mark (user, message id) claims as sent; return how many were still this message's claim."""
        return sum(self._map(self._confirm, claims))

    def _put_state(self, w: StateWrite) -> str:
        item = {
            "user_id": w.user_id,
            "state": Binary(w.blob),
            "state_layout": LAYOUT_ID,
            "first_seen": w.first_seen,
            "last_seen": w.last_seen,
            "events": w.events,
            "state_run_id": w.run_id,
            "state_version": w.version,
            "applied_runs": Binary(w.applied.to_bytes()),
            TTL_ATTRIBUTE: self.expiry(w.last_event),
        }
        if w.locale is not None:
            item["locale_at"], item["locale"] = Decimal(str(w.locale[0])), w.locale[1]
        return self._put(self.state_table, item, "state_version", w.expected)

    def _put_risk(self, w: RiskWrite) -> str:
        item = {**_decimals(w.item), "risk_version": w.expected + 1, TTL_ATTRIBUTE: self.expiry(w.last_event)}
        # On a shared item the state write sets the expiry, from state at least as new as the one scored
        # here (a concurrent run may have merged newer events since): the risk write only fills it in where
        # it is missing, on an item written before expiries existed, so it can never move it back.
        keep = (TTL_ATTRIBUTE,) if self.shared else ()
        return self._put(self.risk_table, item, "risk_version", w.expected, keep)

    def _put(
        self, table: str, item: dict[str, Any], version_attr: str, expected: int, keep: tuple[str, ...] = ()
    ) -> str:
        """Write `item` if `version_attr` is still `expected` (0: absent); a shared item takes `keep` only if unset."""
        names = {"#v": version_attr}
        values: dict[str, Any] = {}
        if expected:
            condition = "#v = :expected"
            values[":expected"] = expected
        else:
            condition = "attribute_not_exists(#v)"
        kwargs: dict[str, Any] = {"TableName": table, "ConditionExpression": condition}
        try:
            if self.shared:
                expr, set_names, set_values = _set_expression({k: v for k, v in item.items() if k != "user_id"}, keep)
                self._call(
                    "UpdateItem",
                    self.client.update_item,
                    Key={"user_id": item["user_id"]},
                    UpdateExpression=expr,
                    ExpressionAttributeNames={**names, **set_names},
                    ExpressionAttributeValues={**values, **set_values},
                    **kwargs,
                )
            else:
                extra = {"ExpressionAttributeValues": values} if values else {}
                self._call(
                    "PutItem", self.client.put_item, Item=item, ExpressionAttributeNames=names, **kwargs, **extra
                )
        except ClientError as exc:
            return self._refused(exc, CONFLICT)
        except (ConnectionError, HTTPClientError):
            return FAILED
        return WRITTEN

    def _confirm(self, claim: tuple[str, str]) -> bool:
        user_id, message_id = claim
        try:
            self._call(
                "UpdateItem",
                self.client.update_item,
                TableName=self.risk_table,
                Key={"user_id": user_id},
                # The version moves too, so a writer that read the claim as pending cannot put it back.
                UpdateExpression="SET contact_status = :sent, risk_version = risk_version + :one",
                ConditionExpression="contact_message_id = :mid",
                ExpressionAttributeValues={":sent": SENT, ":mid": message_id, ":one": 1},
            )
        except ClientError as exc:
            # A newer claim replaced this one, or the mark could not be written: the message went out
            # either way, and a redo would resend it under the same message id.
            self._refused(exc, CONFLICT)
            return False
        except (ConnectionError, HTTPClientError):
            return False
        return True

    # ---- plumbing ----------------------------------------------------------------------------
    def _call(self, op: str, fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """Call the API, counting the call and its retries; retry throttling once botocore has given up.

        botocore retries throttling inside the call until its retry quota (shared by the client, spent
        faster than it refills under sustained throttling) runs dry; then the error reaches us.
        """
        delays = self.backoff.delays()
        while True:
            try:
                resp = fn(**kwargs)
            except ClientError as exc:
                self._count(op, retry_attempts(exc.response))
                delay = next(delays, None) if error_code(exc) in TRANSIENT_CODES else None
                if delay is None:
                    raise
                self._note_retry(f"{op}.{error_code(exc)}")
                self.backoff.wait(delay)
                continue
            self._count(op, retry_attempts(resp))
            return resp

    def _count(self, op: str, retries: int) -> None:
        with self._lock:
            self.calls[op] += 1
            if retries:
                self.retries[op] += retries

    def _note_retry(self, what: str) -> None:
        with self._lock:
            self.retries[what] += 1

    def _refused(self, exc: ClientError, condition_outcome: str) -> str:
        code = error_code(exc)
        if code == "ConditionalCheckFailedException":
            return condition_outcome
        if code in TRANSIENT_CODES:
            return FAILED
        raise exc

    def _map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if len(items) < 2 or self.concurrency == 1:
            return [fn(i) for i in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ddb-write")
        return list(self._pool.map(fn, items))


_STATE_ATTRS = frozenset(
    {
        "state",
        "state_layout",
        "first_seen",
        "last_seen",
        "events",
        "state_run_id",
        "state_version",
        "applied_runs",
        "locale",
        "locale_at",
    }
)
_STATE_PROJECTION = {
    "ProjectionExpression": "user_id, #s, state_layout, state_version, applied_runs, #locale, locale_at, #ttl",
    "ExpressionAttributeNames": {"#s": "state", "#locale": "locale", "#ttl": TTL_ATTRIBUTE},
}


def _stored(items: list[dict[str, Any]]) -> StoredStates:
    ids = [i["user_id"] for i in items]
    return StoredStates(
        batch=StateBatch.from_blobs(ids, [_blob(i) for i in items]),
        versions={i["user_id"]: int(i.get("state_version", 0)) for i in items},
        applied={i["user_id"]: AppliedRuns.load(_binary(i.get("applied_runs"))) for i in items},
        locales={i["user_id"]: (float(i["locale_at"]), i["locale"]) for i in items if "locale" in i},
    )


def _segment(segment: int | None, total_segments: int | None) -> dict[str, int]:
    """Return the Scan arguments of one parallel-scan segment (none for a whole-table scan)."""
    if segment is None or total_segments is None:
        return {}
    return {"Segment": segment, "TotalSegments": total_segments}


def _set_expression(values: dict[str, Any], keep: tuple[str, ...] = ()) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Return a SET expression for `values` (those named in `keep` only where absent), all behind placeholders."""
    names = {f"#{k}": k for k in values}
    vals = {f":{k}": v for k, v in values.items()}
    sets = [f"#{k} = if_not_exists(#{k}, :{k})" if k in keep else f"#{k} = :{k}" for k in values]
    return "SET " + ", ".join(sets), names, vals


def _decimals(value: Any) -> Any:
    """Return `value` with every float, nested ones too, as the exact decimal DynamoDB stores (boto3 refuses floats)."""
    if isinstance(value, (float, np.floating)):
        return Decimal(str(float(value)))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decimals(v) for v in value]
    return value


def _blob(item: dict[str, Any]) -> bytes:
    if item.get("state_layout") != LAYOUT_ID:
        raise StateLayoutError(f"user {item['user_id']}: state layout {item.get('state_layout')} is not {LAYOUT_ID}")
    return _binary(item["state"])


def _binary(value: Any) -> Any:
    """Return the bytes of a Binary attribute; any other value as it is."""
    return bytes(value.value) if isinstance(value, Binary) else value
