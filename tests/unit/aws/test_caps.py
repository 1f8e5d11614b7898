"""The message-counter adapter reads DynamoDB's cancellation reasons as real DynamoDB gives them."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from chalicelib.aws.caps import RunCapTable
from chalicelib.retry import Backoff


def cancelled(*codes: str) -> ClientError:
    """Return the error DynamoDB answers a cancelled transaction with, one reason per item."""
    response = {
        "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
        "CancellationReasons": [{"Code": code} for code in codes],
    }
    return ClientError(response, "TransactWriteItems")


class Transactions:
    """A client whose transactions answer with the given errors in turn, then succeed."""

    def __init__(self, *answers: ClientError) -> None:
        self.answers = list(answers)
        self.calls = 0

    def transact_write_items(self, TransactItems):
        self.calls += 1
        if self.answers:
            raise self.answers.pop(0)
        return {}


def table(client: Transactions) -> RunCapTable:
    return RunCapTable(client, "state", Backoff(sleep=lambda _s: None), clock=lambda: 0.0)


def test_a_transaction_that_collided_with_another_is_tried_again():
    # moto runs transactions one at a time; DynamoDB cancels one that meets another on the same item
    client = Transactions(cancelled("None", "TransactionConflict"), cancelled("TransactionConflict", "None"))
    assert table(client).grant("run", "seg-0/0", "u1", 5) is True
    assert client.calls == 3


def test_a_grant_the_chunk_holds_already_is_reused_even_at_the_cap():
    client = Transactions(cancelled("ConditionalCheckFailed", "ConditionalCheckFailed"))
    assert table(client).grant("run", "seg-0/0", "u1", 5) is True


def test_the_cap_reached_takes_no_grant():
    client = Transactions(cancelled("ConditionalCheckFailed", "None"))
    assert table(client).grant("run", "seg-0/0", "u1", 5) is None


def test_a_cap_of_zero_asks_nothing():
    client = Transactions()
    assert table(client).grant("run", "seg-0/0", "u1", 0) is None
    assert client.calls == 0


def test_a_fault_that_is_no_cancellation_is_raised():
    error = ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "TransactWriteItems")
    with pytest.raises(ClientError):
        table(Transactions(error)).grant("run", "seg-0/0", "u1", 5)
