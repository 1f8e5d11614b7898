"""DynamoDB adapter: the ledger, one item per processed object content in the state table, written once.

A ledger item says that one content (S3Object.identity, or its ETag) under one key was processed, and how
its run ended. It is put under `attribute_not_exists`: the first record of a content stands, and a later put
of the same content (a copy that finished too, a redo repairing its bookkeeping) changes nothing. Its key
starts with a control character, which the reader refuses in any user id, so no user's item can be one; it has
neither a `state` nor an exposure, so the state scans and the exposure scan skip it, as they skip leases.
It carries `expires_at`: TTL deletes it once no delivery can bring its file back (docs/operations.md), so the
ledger never grows with the history and nothing ever lists it.

The same table keeps where the schedule's reconciliation listing of the incoming prefix stands (its cursor).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws.boto import error_code
from chalicelib.aws.leases import _plain

LEDGER_KEY_PREFIX = "\x1fledger\x1f"
CURSOR_KEY = "\x1fcursor\x1freconcile"


def ledger_item_key(key: str, content: str) -> str:
    """Return the item key of one object content: one no user id can be, of fixed size whatever the S3 key."""
    return f"{LEDGER_KEY_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:32]}\x1f{content}"


class LedgerTable:
    """Finds and records processed object contents with GetItem and a conditional PutItem."""

    def __init__(self, client: Any, table: str, retention_seconds: int, clock: Callable[[], float]) -> None:
        self.client = client
        self.table = table
        self.retention_seconds = retention_seconds
        self.clock = clock

    def find(self, key: str, content: str) -> dict[str, Any] | None:
        """Return the ledger record of an object content (strongly consistent), or None if never processed."""
        resp = self.client.get_item(
            TableName=self.table, Key={"user_id": ledger_item_key(key, content)}, ConsistentRead=True
        )
        item = resp.get("Item")
        return None if item is None else json.loads(_plain(item["ledger_record"]))

    def put(self, key: str, content: str, record: dict[str, Any]) -> None:
        """Record that an object content was processed, unless it is recorded already (the first record stands)."""
        item = {
            "user_id": ledger_item_key(key, content),
            "ledger_object": key,
            "ledger_content": content,
            "ledger_status": str(record.get("status", "")),
            "ledger_record": json.dumps(record, default=str, sort_keys=True),
            "expires_at": math.ceil(self.clock()) + self.retention_seconds,
        }
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(user_id)")
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def cursor(self) -> str | None:
        """Return the key the reconciliation listing resumes after, or None to start from the prefix's first."""
        item = self.client.get_item(TableName=self.table, Key={"user_id": CURSOR_KEY}, ConsistentRead=True).get("Item")
        after = _plain(item.get("cursor_after", "")) if item else ""
        return after or None

    def set_cursor(self, after: str | None) -> None:
        """Keep where the reconciliation listing stopped (None: it reached the end, and starts over next time)."""
        self.client.put_item(TableName=self.table, Item={"user_id": CURSOR_KEY, "cursor_after": after or ""})
