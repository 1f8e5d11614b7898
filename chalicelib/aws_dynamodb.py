"""DynamoDB adapter: per-user behaviour state and current risk, in one or two tables."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from chalicelib.aws_s3 import BOTO_CONFIG
from chalicelib.errors import ChurnGuardError, RetryableError
from chalicelib.retry import backoff_delays, sleep
from chalicelib.state import LAYOUT_ID, StateBatch

GET_BATCH = 100
WRITE_BATCH = 25
STATE_ATTRS = ("state", "state_layout", "first_seen", "last_seen", "events", "state_run_id")


class StateLayoutError(ChurnGuardError):
    """A stored state written by another state layout; it must be migrated, not misread."""


class BehaviourTables:
    """Reads behaviour state and writes state and risk items, in batches, retrying what DynamoDB left."""

    def __init__(self, resource: Any, state_table: str, risk_table: str) -> None:
        self.resource = resource
        self.state_table = state_table
        self.risk_table = risk_table
        self.calls = {"BatchGetItem": 0, "BatchWriteItem": 0, "Scan": 0}

    @classmethod
    def create(cls, state_table: str, risk_table: str) -> BehaviourTables:
        """Return an adapter with a default resource (honours AWS_ENDPOINT_URL)."""
        return cls(boto3.resource("dynamodb", config=BOTO_CONFIG), state_table, risk_table)

    @property
    def shared(self) -> bool:
        """True when state and risk live on the same item of one table."""
        return self.state_table == self.risk_table

    def get_states(self, user_ids: list[str]) -> StateBatch:
        """Return the stored state of the given users (users never seen are left out)."""
        found: dict[str, bytes] = {}
        for start in range(0, len(user_ids), GET_BATCH):
            keys = [{"user_id": uid} for uid in user_ids[start : start + GET_BATCH]]
            request = {
                self.state_table: {
                    "Keys": keys,
                    "ProjectionExpression": "user_id, #s, state_layout",
                    "ExpressionAttributeNames": {"#s": "state"},
                }
            }
            delays = backoff_delays()
            while request:
                self.calls["BatchGetItem"] += 1
                resp = self.resource.batch_get_item(RequestItems=request)
                for item in resp["Responses"].get(self.state_table, []):
                    if "state" in item:
                        found[item["user_id"]] = _blob(item)
                request = resp.get("UnprocessedKeys") or {}
                if request:
                    _wait(delays, "BatchGetItem UnprocessedKeys")
        ordered = [uid for uid in user_ids if uid in found]
        return StateBatch.from_blobs(ordered, [found[uid] for uid in ordered])

    def scan_states(self, page_users: int = 5000) -> Iterator[StateBatch]:
        """Yield every stored state, `page_users` users at a time."""
        table = self.resource.Table(self.state_table)
        kwargs: dict[str, Any] = {
            "ProjectionExpression": "user_id, #s, state_layout",
            "ExpressionAttributeNames": {"#s": "state"},
        }
        ids: list[str] = []
        blobs: list[bytes] = []
        while True:
            self.calls["Scan"] += 1
            resp = table.scan(**kwargs)
            for item in resp.get("Items", []):
                if "state" in item:
                    ids.append(item["user_id"])
                    blobs.append(_blob(item))
            if len(ids) >= page_users:
                yield StateBatch.from_blobs(ids, blobs)
                ids, blobs = [], []
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        if ids:
            yield StateBatch.from_blobs(ids, blobs)

    def write(self, state_items: list[dict[str, Any]], risk_items: list[dict[str, Any]]) -> list[tuple[str, dict]]:
        """Write state and risk items; return (table, item) pairs still unprocessed after the retries.

        On a shared table each user's state and risk become one item.
        """
        if self.shared:
            by_user = {item["user_id"]: dict(item) for item in state_items}
            for item in risk_items:
                by_user.setdefault(item["user_id"], {}).update(item)
            return self.put_items(self.state_table, list(by_user.values()))
        return self.put_items(self.state_table, state_items) + self.put_items(self.risk_table, risk_items)

    def put_items(self, table: str, items: list[dict[str, Any]]) -> list[tuple[str, dict]]:
        """Put items 25 a call; return (table, item) pairs still unprocessed after the retries."""
        # Table.batch_writer would resend UnprocessedItems at once, without backoff; this waits.
        left: list[tuple[str, dict]] = []
        for start in range(0, len(items), WRITE_BATCH):
            request = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + WRITE_BATCH]]}
            for delay in (*backoff_delays(), None):
                self.calls["BatchWriteItem"] += 1
                request = self.resource.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
                if not request or delay is None:
                    break
                sleep(delay)
            left += [(name, r["PutRequest"]["Item"]) for name, reqs in request.items() for r in reqs]
        return left


def state_item(user_id: str, blob: bytes, first_seen: str, last_seen: str, events: int, run_id: str) -> dict[str, Any]:
    """Return the DynamoDB attributes of one user's behaviour state."""
    return {
        "user_id": user_id,
        "state": Binary(blob),
        "state_layout": LAYOUT_ID,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "events": events,
        "state_run_id": run_id,
    }


def risk_item(row: dict[str, Any], *, run_id: str, scored_at: str, source: str) -> dict[str, Any]:
    """Return the DynamoDB attributes of one user's current risk (contract's score attributes)."""
    item = dict(row)
    item["churn_probability"] = Decimal(str(row["churn_probability"]))
    item["reasons"] = list(row["reasons"])
    item.update(run_id=run_id, scored_at=scored_at, source=source)
    return item


def _blob(item: dict[str, Any]) -> bytes:
    if item.get("state_layout") != LAYOUT_ID:
        raise StateLayoutError(f"user {item['user_id']}: state layout {item.get('state_layout')} is not {LAYOUT_ID}")
    value = item["state"]
    return bytes(value.value if isinstance(value, Binary) else value)


def _wait(delays: Iterator[float], what: str) -> None:
    try:
        sleep(next(delays))
    except StopIteration:
        raise RetryableError(f"{what} still pending after retries") from None


def encode_item(item: dict[str, Any]) -> dict[str, Any]:
    """Return an item as JSON-safe DynamoDB JSON (binary as base64), for dead-letter records."""
    serializer = TypeSerializer()
    out = {}
    for key, value in item.items():
        typed = serializer.serialize(value)
        if "B" in typed:
            typed = {"B": base64.b64encode(bytes(typed["B"])).decode()}
        out[key] = typed
    return out


def decode_item(encoded: dict[str, Any]) -> dict[str, Any]:
    """Return the item that `encode_item` encoded."""
    deserializer = TypeDeserializer()
    return {
        key: Binary(base64.b64decode(typed["B"])) if "B" in typed else deserializer.deserialize(typed)
        for key, typed in encoded.items()
    }
