"""DynamoDB adapter: run leases, one item per run id in the state table, each written under its own condition.

A lease item's key starts with a control character, which the reader refuses in any user id, so no user's item
can ever be one; it has neither a `state` nor an exposure, so the state scans and the exposure scan skip it.
It carries `expires_at` too: TTL deletes the item of a holder that died without releasing it.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.aws.boto import error_code
from chalicelib.runs.ports import LeaseHolder

LEASE_KEY_PREFIX = "\x1flease\x1f"
# An expired lease is left for a day before TTL may delete it: a holder's late renewal then finds it taken or
# expired, never a fresh item.
TTL_AFTER_EXPIRY_SECONDS = 86400
_NOBODY = LeaseHolder("", 0.0)


def lease_key(run_id: str) -> str:
    """Return the key of a run's lease item: one no user id can be (user ids hold no control character)."""
    return f"{LEASE_KEY_PREFIX}{run_id}"


class RunLeaseTable:
    """Takes, renews and releases run leases with conditional PutItem and DeleteItem calls."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def take(self, run_id: str, holder: str, until: float, now: float) -> LeaseHolder | None:
        """Hold the run's lease until `until` unless another holder's is live at `now`; return that one, or None."""
        condition = "attribute_not_exists(user_id) OR lease_until < :now OR lease_holder = :me"
        return self._put(run_id, holder, until, condition, {":now": _decimal(now)})

    def renew(self, run_id: str, holder: str, until: float) -> LeaseHolder | None:
        """Move `holder`'s lease on to `until`; return who holds it instead, or None when it was renewed."""
        return self._put(run_id, holder, until, "lease_holder = :me", {})

    def release(self, run_id: str, holder: str) -> None:
        """Delete `holder`'s lease (nothing happens when another attempt holds it now)."""
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"user_id": lease_key(run_id)},
                ConditionExpression="lease_holder = :me",
                ExpressionAttributeValues={":me": holder},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def _put(
        self, run_id: str, holder: str, until: float, condition: str, values: dict[str, Any]
    ) -> LeaseHolder | None:
        """Write the lease item under `condition`; return the holder that kept it from being written, or None."""
        item = {
            "user_id": lease_key(run_id),
            "lease_run_id": run_id,
            "lease_holder": holder,
            "lease_until": _decimal(until),
            "expires_at": math.ceil(until) + TTL_AFTER_EXPIRY_SECONDS,
        }
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeValues={":me": holder, **values},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            if not old:
                return _NOBODY
            return LeaseHolder(_plain(old.get("lease_holder", "")), float(_plain(old.get("lease_until", 0))))
        return None


def _decimal(seconds: float) -> Decimal:
    """Return epoch seconds as the exact decimal DynamoDB stores, to the millisecond."""
    return Decimal(str(round(seconds, 3)))


def _plain(value: Any) -> Any:
    """Return an attribute as Python: the resource's client gives plain values, a low-level client typed ones."""
    if isinstance(value, dict) and len(value) == 1:
        kind, inner = next(iter(value.items()))
        return inner if kind in ("S", "N") else value
    return value
