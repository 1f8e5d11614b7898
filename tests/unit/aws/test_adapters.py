"""Adapters retry what a batch call left undone, with backoff, and tell conflicts from faults."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest
from botocore.exceptions import ClientError

from chalicelib.aws.queues import RetentionQueues
from chalicelib.aws.tables import BehaviourTables
from chalicelib.errors import RetryableError
from chalicelib.retry import Backoff
from chalicelib.runs.ports import CONFLICT, FAILED, RiskWrite


class FakeDynamo:
    """A DynamoDB client: BatchGetItem leaves keys unprocessed `unprocessed` times; PutItem fails with `put_error`."""

    def __init__(self, unprocessed: int = 0, put_error: str | None = None) -> None:
        self.unprocessed = unprocessed
        self.put_error = put_error
        self.meta = self  # the adapter reaches the client as resource.meta.client
        self.client = self

    def batch_get_item(self, RequestItems):
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        if self.unprocessed:
            self.unprocessed -= 1
            return {"Responses": {table: []}, "UnprocessedKeys": {table: {**request, "Keys": keys}}}
        items = [{"user_id": k["user_id"], "as_of": "2026-01-01T00:00:00Z"} for k in keys]
        return {"Responses": {table: items}, "UnprocessedKeys": {}}

    def put_item(self, **kwargs):
        self.last_put = kwargs
        if self.put_error:
            raise ClientError({"Error": {"Code": self.put_error, "Message": "no"}}, "PutItem")
        return {}


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
def sleeps() -> list[float]:
    """The sleeps the adapters asked for (none is slept)."""
    return []


def tables_of(client: FakeDynamo, slept: list[float] | None = None) -> BehaviourTables:
    """Return a tables adapter over a fake client, recording its sleeps in `slept`."""
    return BehaviourTables(
        client, "state", "risk", 1, 730 * 86400, Backoff(sleep=(slept if slept is not None else []).append)
    )


def test_unprocessed_keys_are_retried_with_backoff_until_read(sleeps):
    tables = tables_of(FakeDynamo(unprocessed=2), sleeps)
    assert sorted(tables.get_risks([f"u{i}" for i in range(3)])) == ["u0", "u1", "u2"]
    assert len(sleeps) == 2
    assert tables.calls["BatchGetItem"] == 3
    assert tables.retries["BatchGetItem.UnprocessedKeys"] == 2


def test_unprocessed_keys_that_never_clear_raise_a_retryable_error(sleeps):
    tables = tables_of(FakeDynamo(unprocessed=100), sleeps)
    with pytest.raises(RetryableError, match="UnprocessedKeys"):
        tables.get_risks(["u1"])


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("ConditionalCheckFailedException", CONFLICT),
        ("ProvisionedThroughputExceededException", FAILED),
        ("ThrottlingException", FAILED),
        ("InternalServerError", FAILED),
    ],
)
def test_a_refused_conditional_write_is_a_conflict_and_a_lasting_fault_a_failure(code, outcome):
    tables = tables_of(FakeDynamo(put_error=code))
    assert tables.put_risks([RiskWrite({"user_id": "u1", "as_of": "x"}, expected=3, last_event=0.0)]) == {"u1": outcome}


def test_a_malformed_write_is_a_bug_and_raises():
    tables = tables_of(FakeDynamo(put_error="ValidationException"))
    with pytest.raises(ClientError):
        tables.put_risks([RiskWrite({"user_id": "u1"}, expected=0, last_event=0.0)])


def _message(i: int) -> dict:
    return {"message_id": str(i), "risk_tier": "high", "value_tier": "low", "action": {"channel": "push"}}


def test_failed_message_entries_are_resent_once_each(sleeps):
    sqs = FakeSqs(fail=1)
    queues = RetentionQueues(sqs, {"high": "q-high"}, Backoff(sleep=sleeps.append))
    assert queues.send("high", [_message(i) for i in range(12)]) == (12, [])
    assert sorted(json.loads(b)["message_id"] for b in sqs.bodies) == sorted(str(i) for i in range(12))
    assert queues.calls == 3
    assert len(sleeps) == 1


def test_message_entries_that_keep_failing_are_handed_back(sleeps):
    sqs = FakeSqs(fail=100)
    queues = RetentionQueues(sqs, {"high": "q-high"}, Backoff(sleep=sleeps.append))
    sent, failed = queues.send("high", [_message(i) for i in range(3)])
    assert (sent, [m["message_id"] for m in failed]) == (2, ["0"])


def test_every_float_of_a_risk_item_reaches_dynamodb_as_an_exact_decimal():
    # GIVEN a risk item with a float at the top, one nested, and a numpy float in a list
    client = FakeDynamo()
    item = {"user_id": "u1", "churn_probability": 0.906571, "extra": {"p": 0.25}, "xs": [np.float32(0.5), "a"]}
    # WHEN it is written
    assert tables_of(client).put_risks([RiskWrite(item, expected=0, last_event=0.0)]) == {"u1": "written"}
    # THEN boto3 gets decimals (it refuses floats), each the float's shortest decimal
    stored = client.last_put["Item"]
    assert stored["churn_probability"] == Decimal("0.906571") and stored["extra"] == {"p": Decimal("0.25")}
    assert stored["xs"] == [Decimal("0.5"), "a"] and stored["risk_version"] == 1
