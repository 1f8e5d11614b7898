"""The one interface the lookup reads the risk table through; the DynamoDB adapter is chalicelib/aws/risk_reads.py."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class TierPage(NamedTuple):
    """One page of a query on one index key: its items, and the user id to resume after (None: the key is done)."""

    items: list[dict[str, Any]]
    last_user_id: str | None


class RiskReader(Protocol):
    """Reads risk items, one by user id or a key of the tier index at a time; only the attributes asked for."""

    def get_risk(self, user_id: str, attributes: tuple[str, ...]) -> dict[str, Any] | None:
        """Return the named attributes of a user's risk item, or None when the user has none."""

    def query_tier(self, key: str, after: str | None, limit: int, attributes: tuple[str, ...]) -> TierPage:
        """Return up to `limit` items under one index key, in user id order, after user `after` when given."""
