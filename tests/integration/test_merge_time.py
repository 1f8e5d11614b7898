"""Time in the merge, through DynamoDB on moto: a redo is recognised whatever came between, in items written
by this version or an older one, and each user is scored as of their own time."""

from __future__ import annotations

import dataclasses

import pytest
from boto3.dynamodb.types import Binary

from chalicelib.scoring.scorer import iso_time
from churnguard_offline.bootstrap import ensure_resources
from tests.integration.conftest import AS_OF, Aws, make_pipeline

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
DYNAMODB_ITEM_LIMIT = 400 * 1024


def _one_purchase(uid: str, at: float) -> bytes:
    return f"user_id,event_time,event_type,value\n{uid},{iso_time(at)},purchase,10\n".encode()


class Clocked:
    """A pipeline over the embedded AWS whose clock the test moves."""

    def __init__(self, aws: Aws) -> None:
        self.aws = aws
        self.now = AS_OF.timestamp()
        self.pipeline = make_pipeline(aws.settings)
        self.pipeline.ctx.clock = lambda: self.now

    def process(self, key: str, data: bytes | None = None) -> dict:
        if data is not None:
            self.aws.land(key, data)
        return self.pipeline.process_object(key, landed_at=self.now)

    def forget_the_run_finished(self) -> None:
        """Leave a run's state merged but its ledger and run records unwritten, as a crash just before them."""
        self.aws.forget_ledger()
        for key in self.aws.keys("runs/"):
            self.aws.s3.delete_object(Bucket=self.aws.settings.behaviour_bucket, Key=key)

    def state_item(self, uid: str) -> dict:
        return self.aws.ddb.Table(self.aws.settings.state_table).get_item(Key={"user_id": uid})["Item"]


def _item_bytes(item: dict) -> int:
    """Return an upper bound of an item's size as DynamoDB counts it (names and values, 3 bytes a list element)."""

    def size(value) -> int:
        if isinstance(value, Binary):
            return len(value.value)
        if isinstance(value, (list, tuple)):
            return 3 + sum(3 + size(v) for v in value)
        if isinstance(value, dict):
            return 3 + sum(len(k.encode()) + 3 + size(v) for k, v in value.items())
        return len(str(value).encode()) + 1

    return sum(len(name.encode()) + size(value) for name, value in item.items())


def test_a_state_item_holding_two_days_of_minute_runs_still_knows_the_first_and_stays_small(aws, no_sleep):
    # GIVEN a user's file whose run merged the user, then died before its ledger record
    world = Clocked(aws)
    assert world.process("incoming/first.csv", _one_purchase("u1", world.now - HOUR))["status"] == "succeeded"
    world.forget_the_run_finished()
    # AND the worst case the bound allows since: 2,879 other runs of a minute stream over two days
    applied = world.pipeline.tables.get_states(["u1"]).applied["u1"]
    for i in range(2879):
        applied, _ = applied.record(f"obj-stream-{i:04d}", world.now + MINUTE * (i + 1), 2 * DAY)
    aws.ddb.Table(aws.settings.state_table).update_item(
        Key={"user_id": "u1"},
        UpdateExpression="SET applied_runs = :runs",
        ExpressionAttributeValues={":runs": Binary(applied.to_bytes())},
    )
    # WHEN the first file is redone just inside the bound
    world.now += 2 * DAY - MINUTE
    redo = world.process("incoming/first.csv")
    # THEN its purchase is not merged again, and the item is 12 bytes a run, far under DynamoDB's limit
    assert redo["status"] == "succeeded" and redo["delivery"]["duplicates_suppressed"] == {"state": 1}
    item = world.state_item("u1")
    assert item["events"] == 1 and len(item["applied_runs"].value) == 2880 * 12
    assert _item_bytes(item) < 36 * 1024 < DYNAMODB_ITEM_LIMIT


@pytest.mark.parametrize("shared", [False, True], ids=["own-state-table", "shared-table"])
def test_a_redo_of_a_run_recorded_in_the_older_list_format_is_still_recognised(aws, no_sleep, shared):
    # GIVEN an item whose merged runs were written as the older "run_id@epoch" list
    if shared:
        aws.settings = dataclasses.replace(aws.settings, state_table=aws.settings.risk_table)
        ensure_resources(aws.settings)
    world = Clocked(aws)
    first = world.process("incoming/first.csv", _one_purchase("u1", world.now - HOUR))
    world.forget_the_run_finished()
    older = [f"obj-older-{i}@{int(world.now) - 60 * i}" for i in range(31)] + [f"{first['run_id']}@{int(world.now)}"]
    aws.ddb.Table(aws.settings.state_table).update_item(
        Key={"user_id": "u1"},
        UpdateExpression="SET applied_runs = :old",
        ExpressionAttributeValues={":old": older},
    )
    # WHEN its run is redone an hour later, and then another file comes for the user
    world.now += HOUR
    redo = world.process("incoming/first.csv")
    world.now += MINUTE
    assert world.process("incoming/second.csv", _one_purchase("u1", world.now - 1))["status"] == "succeeded"
    # THEN the redo merged nothing, and the next write kept the older runs in the packed form
    assert redo["delivery"]["duplicates_suppressed"] == {"state": 1}
    assert world.state_item("u1")["events"] == 2
    world.forget_the_run_finished()
    again = world.process("incoming/first.csv")
    assert again["delivery"]["duplicates_suppressed"] == {"state": 1}
    assert world.state_item("u1")["events"] == 2


def test_one_users_skewed_event_moves_only_that_users_as_of(aws, no_sleep):
    # GIVEN a file of 40 users, one of whom sent a row 23 h past the file's landing time
    world = Clocked(aws)
    landed = world.now
    rows = [f"u{i:02d},{iso_time(landed - (i + 1) * HOUR)},login," for i in range(40)]
    rows[7] = f"u07,{iso_time(landed + 23 * HOUR)},login,"
    data = ("user_id,event_time,event_type,value\n" + "\n".join(rows) + "\n").encode()
    # WHEN it is processed
    summary = world.process("incoming/skewed.csv", data)
    # THEN the other 39 keep the landing time, and the skewed user has their own
    risks = {i["user_id"]: i["as_of"] for i in aws.items(aws.settings.risk_table)}
    assert summary["status"] == "succeeded" and len(risks) == 40
    assert risks.pop("u07") == iso_time(landed + 23 * HOUR)
    assert set(risks.values()) == {iso_time(landed)}
    assert all(b["as_of"] == iso_time(landed) for b in aws.drain_all() if b["user_id"] != "u07")
