"""DynamoDB adapter: the shared message counter of a run spread over many workers, and the grants taken from it.

A run's counter and its chunks' grants are items of the state table under keys that start with a control
character, which the reader refuses in any user id, so no user's item can be one; they have no `state` and no
exposure, so the state scans and the exposure scan skip them, as they skip the run leases (leases.py). Each grant
is written in the same transaction as the counter's increment: a chunk redone after a crash finds the users it
holds a grant for and takes no second one, and two workers at once can never take more than the cap between them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws.boto import error_code
from chalicelib.retry import Backoff

CAP_KEY_PREFIX = "\x1fcap\x1f"
# The items outlive any run that uses them by far; TTL deletes them after that.
CAP_TTL_SECONDS = 7 * 86400
# What a cancelled transaction's reason says when a condition failed, and when another transaction was first.
CONDITION_FAILED, CONFLICT = "ConditionalCheckFailed", "TransactionConflict"


def counter_key(run_id: str) -> str:
    """Return the key of a run's message counter: one no user id can be."""
    return f"{CAP_KEY_PREFIX}{run_id}"


def grant_key(run_id: str, chunk: str) -> str:
    """Return the key of the grants one chunk of a run took."""
    return f"{CAP_KEY_PREFIX}{run_id}\x1f{chunk}"


class RunCapTable:
    """Takes grants from run message counters with TransactWriteItems, retrying transactions that collided."""

    def __init__(
        self, client: Any, table: str, backoff: Backoff | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.client = client
        self.table = table
        self.backoff = backoff or Backoff()
        self.clock = clock

    def grant(self, run_id: str, chunk: str, user_id: str, cap: int) -> bool | None:
        """Take one message of the run's `cap` for a user of `chunk`; True when taken (now or before), None when
        the cap is reached."""
        if cap <= 0:
            return None
        delays = self.backoff.delays()
        while True:
            try:
                self.client.transact_write_items(TransactItems=self._items(run_id, chunk, user_id, cap))
            except ClientError as exc:
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if error_code(exc) != "TransactionCanceledException" or len(reasons) != 2:
                    raise
                if reasons[1] == CONDITION_FAILED:
                    return True  # this chunk holds a grant for the user already: a redo
                if reasons[0] == CONDITION_FAILED:
                    return None
                delay = next(delays, None)
                if CONFLICT not in reasons or delay is None:
                    raise
                self.backoff.wait(delay)
                continue
            return True

    def granted(self, run_id: str, chunk: str) -> frozenset[str]:
        """Return the users `chunk` of the run holds a grant for (read strongly consistent)."""
        resp = self.client.get_item(
            TableName=self.table, Key={"user_id": grant_key(run_id, chunk)}, ConsistentRead=True
        )
        return frozenset(resp.get("Item", {}).get("granted_users", ()))

    def claimed(self, run_id: str) -> int:
        """Return how many messages of the run's cap are taken."""
        resp = self.client.get_item(TableName=self.table, Key={"user_id": counter_key(run_id)}, ConsistentRead=True)
        return int(resp.get("Item", {}).get("cap_claimed", 0))

    def _items(self, run_id: str, chunk: str, user_id: str, cap: int) -> list[dict[str, Any]]:
        """Return the transaction: the counter moves on below the cap, and the chunk's grant names the user."""
        ttl = math.ceil(self.clock()) + CAP_TTL_SECONDS
        counter = {
            "TableName": self.table,
            "Key": {"user_id": counter_key(run_id)},
            "UpdateExpression": "SET cap_claimed = if_not_exists(cap_claimed, :zero) + :one, cap_run_id = :run, "
            "expires_at = :ttl",
            "ConditionExpression": "attribute_not_exists(cap_claimed) OR cap_claimed < :cap",
            "ExpressionAttributeValues": {":zero": 0, ":one": 1, ":run": run_id, ":ttl": ttl, ":cap": cap},
        }
        grant = {
            "TableName": self.table,
            "Key": {"user_id": grant_key(run_id, chunk)},
            "UpdateExpression": "ADD granted_users :users SET cap_run_id = :run, expires_at = :ttl",
            "ConditionExpression": "attribute_not_exists(granted_users) OR NOT contains(granted_users, :user)",
            "ExpressionAttributeValues": {":users": {user_id}, ":user": user_id, ":run": run_id, ":ttl": ttl},
        }
        return [{"Update": counter}, {"Update": grant}]
