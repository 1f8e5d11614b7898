"""The strict-AWS layer itself: each rule fires where real AWS refuses, and lets the legal case through."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from tests import strict_aws as strict_aws_module
from tests.strict_aws import MAX_ITEM_BYTES, IamPolicy, PolicyError, item_bytes, strict_aws

BUCKET = "churnguard-behaviour-dev"
ARN = f"arn:aws:s3:::{BUCKET}"


def _policy(*statements: dict) -> IamPolicy:
    return IamPolicy({"Version": "2012-10-17", "Statement": list(statements)})


def _list_bucket(condition: dict | None = None, resource: str = ARN, action: str = "s3:ListBucket") -> dict:
    statement = {"Effect": "Allow", "Action": [action], "Resource": [resource]}
    if condition is not None:
        statement["Condition"] = condition
    return statement


def _code(info: pytest.ExceptionInfo) -> str:
    return info.value.response["Error"]["Code"]


# ---- the policy evaluation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("statement", "answers_404"),
    [
        (_list_bucket(), True),
        (_list_bucket(action="s3:List*"), True),
        (_list_bucket(resource="arn:aws:s3:::churnguard-behaviour-*"), True),
        (_list_bucket(resource="arn:aws:s3:::other-bucket"), False),
        (_list_bucket(resource=f"{ARN}/*"), False),  # object ARNs are not the bucket
        (_list_bucket(action="s3:GetObject"), False),
        # a prefix condition needs s3:prefix, which a GET does not carry
        (_list_bucket({"StringLike": {"s3:prefix": ["checkpoints/*"]}}), False),
        (_list_bucket({"StringEquals": {"s3:prefix": ""}}), False),
        # ... unless it holds when the key is absent
        (_list_bucket({"StringLikeIfExists": {"s3:prefix": ["checkpoints/*"]}}), True),
        (_list_bucket({"StringNotLike": {"s3:prefix": ["secret/*"]}}), True),
        (_list_bucket({"Null": {"s3:prefix": "true"}}), True),
        (_list_bucket({"Null": {"s3:prefix": "false"}}), False),
    ],
)
def test_a_missing_key_answers_404_only_under_a_list_bucket_grant_that_covers_a_get(statement, answers_404):
    assert _policy(statement).missing_key_answers_404(BUCKET) is answers_404


def test_an_explicit_deny_wins_and_an_unknown_operator_is_refused_not_guessed():
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": ARN}
    assert not _policy(_list_bucket(), deny).missing_key_answers_404(BUCKET)
    with pytest.raises(PolicyError, match="ForAnyValue:StringLike"):
        _policy(_list_bucket({"ForAnyValue:StringLike": {"s3:prefix": ["a/*"]}})).missing_key_answers_404(BUCKET)


def test_prefix_conditions_still_decide_a_listing_that_names_its_prefix():
    policy = _policy(_list_bucket({"StringLike": {"s3:prefix": ["incoming/*"]}}))
    assert policy.allows("s3:ListBucket", ARN, {"s3:prefix": ["incoming/2026/"]})
    assert not policy.allows("s3:ListBucket", ARN, {"s3:prefix": ["runs/"]})


# ---- S3 -------------------------------------------------------------------------------------------------
def test_a_get_or_head_of_a_missing_key_is_403_without_list_bucket(aws):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="checkpoints/there.json", Body=b"{}")
    old = _policy(_list_bucket({"StringLike": {"s3:prefix": ["incoming/*", "ledger/*"]}}))
    with strict_aws(old) as layer:
        with pytest.raises(ClientError) as get:
            s3.get_object(Bucket=BUCKET, Key="checkpoints/missing.json")
        with pytest.raises(ClientError) as head:
            s3.head_object(Bucket=BUCKET, Key="checkpoints/missing.json")
        # an existing key reads as ever
        assert s3.get_object(Bucket=BUCKET, Key="checkpoints/there.json")["Body"].read() == b"{}"
    assert _code(get) == "AccessDenied" and get.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert _code(head) == "403"
    assert layer.refused == [("GetObject", "AccessDenied"), ("HeadObject", "AccessDenied")]


def test_a_get_of_a_missing_key_is_404_with_list_bucket(aws):
    s3 = boto3.client("s3")
    with strict_aws(_policy(_list_bucket())), pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key="checkpoints/missing.json")


def test_a_key_over_1024_bytes_is_refused_and_one_at_the_limit_is_written(aws):
    s3 = boto3.client("s3")
    at_limit = "incoming/" + "é" * ((1024 - 9) // 2) + "x" * ((1024 - 9) % 2)
    assert len(at_limit.encode()) == 1024
    s3.put_object(Bucket=BUCKET, Key=at_limit, Body=b"a")
    with pytest.raises(ClientError) as put:
        s3.put_object(Bucket=BUCKET, Key=at_limit + "x", Body=b"a")
    with pytest.raises(ClientError) as copy:
        s3.copy_object(Bucket=BUCKET, Key="rejected/" + at_limit, CopySource={"Bucket": BUCKET, "Key": at_limit})
    assert _code(put) == _code(copy) == "KeyTooLongError"
    assert aws.keys("rejected/") == [] and aws.keys("incoming/") == [at_limit]


# ---- SQS ------------------------------------------------------------------------------------------------
def _entry(i: int, body: str = "{}", attribute: str = "high") -> dict:
    return {
        "Id": str(i),
        "MessageBody": body,
        "MessageAttributes": {"risk_tier": {"DataType": "String", "StringValue": attribute}},
    }


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (_entry(3, '{"user_id": "u\uffff"}'), "InvalidMessageContents"),
        (_entry(3, '{"user_id": "u\x00"}'), "InvalidMessageContents"),
        (_entry(3, attribute="hi\x08gh"), "InvalidMessageContents"),
        (_entry(3, "x" * (256 * 1024 - 18)), "BatchEntryTooLong"),  # 1 byte over with its attribute,
    ],
)
def test_a_message_sqs_refuses_fails_alone_in_its_batch(aws, bad, code):
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=aws.settings.queues["high"])["QueueUrl"]
    entries = [_entry(i, '{"n": "\u00e9 \U0001f600"}\t') for i in range(3)] + [bad]

    resp = sqs.send_message_batch(QueueUrl=url, Entries=entries)

    assert sorted(s["Id"] for s in resp["Successful"]) == ["0", "1", "2"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in resp["Failed"]] == [("3", code, True)]
    assert len(aws.drain("high")) == 3


def test_a_batch_of_only_refused_messages_sends_nothing_and_a_single_send_raises(aws):
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=aws.settings.queues["high"])["QueueUrl"]
    resp = sqs.send_message_batch(QueueUrl=url, Entries=[_entry(0, "\ufffe")])
    with pytest.raises(ClientError) as single:
        sqs.send_message(QueueUrl=url, MessageBody="\ufffe")
    assert resp["Successful"] == [] and resp["Failed"][0]["Code"] == "InvalidMessageContents"
    assert _code(single) == "InvalidMessageContents" and aws.drain("high") == []


def test_a_batch_whose_messages_together_pass_256_kib_fails_whole(aws):
    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName=aws.settings.queues["high"])["QueueUrl"]
    with pytest.raises(ClientError) as info:
        sqs.send_message_batch(QueueUrl=url, Entries=[_entry(i, "y" * 100_000) for i in range(3)])
    assert _code(info) == "AWS.SimpleQueueService.BatchRequestTooLong" and aws.drain("high") == []


# ---- DynamoDB -------------------------------------------------------------------------------------------
def _item(user: str, payload: int) -> dict:
    return {"user_id": {"S": user}, "blob": {"B": b"z" * payload}}


def test_an_item_over_400_kb_is_refused_by_put_and_batch_write_and_one_under_is_written(aws):
    ddb = boto3.client("dynamodb")
    table = aws.settings.state_table
    assert item_bytes({"user_id": {"S": "u"}, "xs": {"L": [{"S": "ab"}, {"N": "123"}]}}) == 7 + 1 + 2 + 3 + 3 + 4
    # (moto counts a binary value by its base64 text and refuses past about 405,000 of its bytes: 300 KB passes)
    ddb.put_item(TableName=table, Item=_item("fits", 300_000))
    with pytest.raises(ClientError) as put:
        ddb.put_item(TableName=table, Item=_item("big", MAX_ITEM_BYTES))
    with pytest.raises(ClientError) as batch:
        ddb.batch_write_item(RequestItems={table: [{"PutRequest": {"Item": _item("big", MAX_ITEM_BYTES)}}]})
    assert _code(put) == _code(batch) == "ValidationException"
    assert "maximum allowed size" in put.value.response["Error"]["Message"]
    assert [i["user_id"] for i in aws.items(table)] == ["fits"]
    assert aws.strict.refused == [("PutItem", "ValidationException"), ("BatchWriteItem", "ValidationException")]


def test_an_update_that_grows_an_item_past_the_limit_is_refused_and_leaves_it_as_it_was(aws, monkeypatch):
    # GIVEN a limit of 2,000 bytes (moto would take the item: this is the layer's own check of the item as updated)
    monkeypatch.setattr(strict_aws_module, "MAX_ITEM_BYTES", 2000)
    ddb = boto3.client("dynamodb")
    table = aws.settings.state_table
    ddb.put_item(TableName=table, Item=_item("u1", 1000))
    update = {
        "TableName": table,
        "Key": {"user_id": {"S": "u1"}},
        "UpdateExpression": "SET extra = :x",
        "ExpressionAttributeValues": {":x": {"B": b"w" * 1000}},
    }
    # WHEN an update would take it past the limit, and then a smaller one
    with pytest.raises(ClientError) as grown:
        ddb.update_item(**update)
    ddb.update_item(**{**update, "ExpressionAttributeValues": {":x": {"B": b"w" * 10}}})
    # THEN the first is refused and changed nothing; the second is applied
    assert _code(grown) == "ValidationException"
    assert "maximum allowed size" in grown.value.response["Error"]["Message"]
    [item] = aws.items(table)
    assert len(item["blob"].value) == 1000 and len(item["extra"].value) == 10
    assert aws.strict.refused == [("UpdateItem", "ValidationException")]


def test_a_batch_write_of_more_than_25_items_is_refused(aws):
    ddb = boto3.client("dynamodb")
    table = aws.settings.state_table
    puts = [{"PutRequest": {"Item": {"user_id": {"S": f"u{i}"}}}} for i in range(26)]
    with pytest.raises(ClientError) as info:
        ddb.batch_write_item(RequestItems={table: puts})
    ddb.batch_write_item(RequestItems={table: puts[:25]})
    assert _code(info) == "ValidationException" and len(aws.items(table)) == 25


def _takers_of_one_item(table: str, threads: int) -> int:
    """Return how many of `threads` concurrent conditional puts of one new item succeeded."""
    ddb = boto3.client("dynamodb")
    ready = threading.Barrier(threads)
    won: list[bool] = []

    def take(i: int) -> None:
        ready.wait()
        try:
            ddb.put_item(
                TableName=table,
                Item={"user_id": {"S": "\x1flease\x1frace"}, "holder": {"S": str(i)}},
                ConditionExpression="attribute_not_exists(user_id)",
            )
            won.append(True)
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"

    workers = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(won)


def test_a_conditional_put_raced_by_many_threads_is_won_by_exactly_one(aws, monkeypatch):
    # GIVEN moto, which checks a condition and then writes with no lock between, slowed at the worst moment
    from moto.dynamodb.models.table import Table

    real_get = Table.get_item

    def slow_get(self, *args, **kwargs):
        found = real_get(self, *args, **kwargs)
        time.sleep(0.01)  # between reading the item and writing it: where another thread's put slips in
        return found

    monkeypatch.setattr(Table, "get_item", slow_get)
    # WHEN 8 threads race one conditional put of a new item
    # THEN exactly one wins, as in DynamoDB, where a conditional write is atomic
    assert _takers_of_one_item(aws.settings.state_table, 8) == 1
