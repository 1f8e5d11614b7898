"""Adapters retry what a batch call left undone, with backoff, and give up loudly."""

from __future__ import annotations

import json

import pytest

from chalicelib import aws_dynamodb, aws_sqs
from chalicelib.aws_dynamodb import BehaviourTables
from chalicelib.aws_sqs import RetentionQueues


class FakeResource:
    """A DynamoDB resource whose first `fail` batch writes leave the last item unprocessed."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.written: list[dict] = []

    def batch_write_item(self, RequestItems):
        ((table, requests),) = RequestItems.items()
        if self.fail:
            self.fail -= 1
            self.written += [r["PutRequest"]["Item"] for r in requests[:-1]]
            return {"UnprocessedItems": {table: requests[-1:]}}
        self.written += [r["PutRequest"]["Item"] for r in requests]
        return {"UnprocessedItems": {}}


class FakeSqs:
    """An SQS client that fails the first entry of the first `fail` batches."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.bodies: list[str] = []

    def get_queue_url(self, QueueName):
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def send_message_batch(self, QueueUrl, Entries):
        failed = []
        if self.fail:
            self.fail -= 1
            failed = [{"Id": Entries[0]["Id"], "SenderFault": False, "Code": "InternalError"}]
        self.bodies += [e["MessageBody"] for e in Entries if e["Id"] not in {f["Id"] for f in failed}]
        return {"Successful": [], "Failed": failed}


@pytest.fixture
def sleeps(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(aws_dynamodb, "sleep", slept.append)
    monkeypatch.setattr(aws_sqs, "sleep", slept.append)
    return slept


def test_unprocessed_items_are_retried_with_backoff_until_written(sleeps):
    resource = FakeResource(fail=2)
    tables = BehaviourTables(resource, "state", "risk")
    assert tables.write([], [{"user_id": f"u{i}"} for i in range(30)]) == []
    assert sorted(i["user_id"] for i in resource.written) == sorted(f"u{i}" for i in range(30))
    assert len(sleeps) == 2
    assert tables.calls["BatchWriteItem"] == 2 + 2


def test_unprocessed_items_that_never_clear_are_handed_back(sleeps):
    tables = BehaviourTables(FakeResource(fail=100), "state", "risk")
    left = tables.write([], [{"user_id": "u1"}, {"user_id": "u2"}])
    assert left == [("risk", {"user_id": "u2"})]
    assert tables.calls["BatchWriteItem"] == len(sleeps) + 1 == 8


def _message(i: int) -> dict:
    return {"message_id": str(i), "risk_tier": "high", "value_tier": "low", "action": {"channel": "push"}}


def test_failed_message_entries_are_resent_once_each(sleeps):
    sqs = FakeSqs(fail=1)
    queues = RetentionQueues(sqs, {"high": "q-high"})
    assert queues.send("high", [_message(i) for i in range(12)]) == (12, [])
    assert sorted(json.loads(b)["message_id"] for b in sqs.bodies) == sorted(str(i) for i in range(12))
    assert queues.calls == 3
    assert len(sleeps) == 1


def test_message_entries_that_keep_failing_are_handed_back(sleeps):
    sqs = FakeSqs(fail=100)
    queues = RetentionQueues(sqs, {"high": "q-high"})
    sent, failed = queues.send("high", [_message(i) for i in range(3)])
    assert (sent, [m["message_id"] for m in failed]) == (2, ["0"])
