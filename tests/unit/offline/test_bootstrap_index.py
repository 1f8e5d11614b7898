"""ensure_resources' tier index on a table made before it: added once, waited for, and safe beside another bootstrap."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from churnguard_offline import bootstrap


class Tables:
    """A DynamoDB client stand-in: DescribeTable answers the scripted statuses of the index, in turn."""

    def __init__(self, statuses: list[str | None], refuse_update: bool = False) -> None:
        self.statuses = statuses
        self.refuse_update = refuse_update
        self.updates: list[dict] = []

    def describe_table(self, TableName: str) -> dict:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        indexes = [] if status is None else [{"IndexName": bootstrap.INDEX_NAME, "IndexStatus": status}]
        return {"Table": {"TableName": TableName, "GlobalSecondaryIndexes": indexes}}

    def update_table(self, **kwargs) -> None:
        self.updates.append(kwargs)
        if self.refuse_update:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "index exists"}}, "UpdateTable")


def test_a_table_without_the_index_gets_it_and_bootstrap_waits_while_it_is_built():
    client, slept = Tables([None, "CREATING", "CREATING", "ACTIVE"]), []
    assert bootstrap._ensure_tier_index(client, "risk", sleep=slept.append) == "ACTIVE"
    (update,) = client.updates
    assert update["GlobalSecondaryIndexUpdates"][0]["Create"] == bootstrap.tier_index()
    assert update["AttributeDefinitions"] == [{"AttributeName": bootstrap.KEY_ATTRIBUTE, "AttributeType": "S"}]
    assert len(slept) == 2


def test_a_table_with_the_index_is_left_alone():
    client = Tables(["ACTIVE"])
    bootstrap._ensure_tier_index(client, "risk", sleep=lambda _s: pytest.fail("waited for a built index"))
    assert client.updates == []


def test_an_index_another_bootstrap_is_adding_is_fine_and_a_real_refusal_is_raised():
    # (another bootstrap's UpdateTable landed between our DescribeTable and ours)
    bootstrap._ensure_tier_index(
        Tables([None, "CREATING", "ACTIVE"], refuse_update=True), "risk", sleep=lambda _s: None
    )
    with pytest.raises(ClientError):
        bootstrap._ensure_tier_index(Tables([None], refuse_update=True), "risk", sleep=lambda _s: None)


def test_the_wait_for_a_slow_build_is_bounded():
    slept: list[float] = []
    status = bootstrap._ensure_tier_index(Tables(["CREATING"]), "risk", sleep=slept.append)
    assert sum(slept) == bootstrap.INDEX_WAIT_SECONDS and status == "CREATING"
