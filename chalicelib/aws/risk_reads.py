"""DynamoDB adapter of the lookup (chalicelib/lookup/ports.py RiskReader): GetItem and Query on the tier index only.

The API's function runs with a role that may do just these two calls on the risk table and its index
(.chalice/policy-api-dev.json). Reads are eventually consistent: a lookup may trail a write by a second, at half the
read cost. Every attribute is asked for by name (a projection), so neither the state blob of a shared table nor the
claim bookkeeping is ever read.
"""

from __future__ import annotations

from typing import Any

import boto3

from chalicelib.aws.boto import BOTO_CONFIG
from chalicelib.lookup.ports import TierPage
from chalicelib.lookup.tier_index import INDEX_NAME, KEY_ATTRIBUTE


class RiskReads:
    """Reads the risk table by user id, and its tier index by key."""

    def __init__(self, client: Any, risk_table: str) -> None:
        self.client = client
        self.risk_table = risk_table

    @classmethod
    def create(cls, risk_table: str) -> RiskReads:
        """Return an adapter with a default client (honours AWS_ENDPOINT_URL); the resource's client speaks Python."""
        return cls(boto3.resource("dynamodb", config=BOTO_CONFIG).meta.client, risk_table)

    def get_risk(self, user_id: str, attributes: tuple[str, ...]) -> dict[str, Any] | None:
        """Return the named attributes of a user's risk item, or None when there is none."""
        resp = self.client.get_item(TableName=self.risk_table, Key={"user_id": user_id}, **_projection(attributes))
        item = resp.get("Item")
        # A shared table holds state-only items too (a user merged, not yet scored): no score, no risk item.
        return item if item and "risk_tier" in item else None

    def query_tier(self, key: str, after: str | None, limit: int, attributes: tuple[str, ...]) -> TierPage:
        """Return up to `limit` items under one key of the tier index, in user id order, after user `after`."""
        projection = _projection(attributes)
        kwargs: dict[str, Any] = {
            "TableName": self.risk_table,
            "IndexName": INDEX_NAME,
            "KeyConditionExpression": "#key = :key",
            "ExpressionAttributeNames": {**projection["ExpressionAttributeNames"], "#key": KEY_ATTRIBUTE},
            "ExpressionAttributeValues": {":key": key},
            "ProjectionExpression": projection["ProjectionExpression"],
            "Limit": limit,
        }
        if after is not None:
            kwargs["ExclusiveStartKey"] = {KEY_ATTRIBUTE: key, "user_id": after}
        resp = self.client.query(**kwargs)
        last = resp.get("LastEvaluatedKey")
        return TierPage(resp.get("Items", []), last["user_id"] if last else None)


def _projection(attributes: tuple[str, ...]) -> dict[str, Any]:
    """Return a projection of `attributes`, every name behind a placeholder (`action` and others are reserved)."""
    names = {f"#a{i}": name for i, name in enumerate(attributes)}
    return {"ProjectionExpression": ", ".join(names), "ExpressionAttributeNames": names}
