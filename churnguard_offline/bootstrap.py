"""Create every AWS resource the app uses, named from the environment; safe to call again."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws.boto import BOTO_CONFIG, error_code
from chalicelib.aws.tables import TTL_ATTRIBUTE
from chalicelib.lookup.tier_index import INDEX_NAME, KEY_ATTRIBUTE
from chalicelib.lookup.views import READ_ATTRIBUTES
from chalicelib.settings import Settings

DLQ_SUFFIX = "-dlq"
MAX_RECEIVE_COUNT = 5
# Longer than the handler's timeout, so a message is not redelivered while still being handled.
VISIBILITY_TIMEOUT_SECONDS = 960
MESSAGE_RETENTION_SECONDS = 14 * 86400
# The files queue: hidden for six times the handler's timeout (900 s), as AWS advises for a Lambda event source.
FILES_VISIBILITY_TIMEOUT_SECONDS = 6 * 900
# How long a bootstrap waits for the tier index to be built on an existing table (DynamoDB backfills it from the
# table's items; a large table takes longer, and the listing answers once it is ACTIVE).
INDEX_WAIT_SECONDS, INDEX_POLL_SECONDS = 600, 5


def ensure_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Create the bucket, tables (with TTL on and the tier index), queues and dead-letter queues if missing; wait until
    usable."""
    settings = settings or Settings.from_env()
    s3 = boto3.client("s3", config=BOTO_CONFIG)
    dynamodb = boto3.client("dynamodb", config=BOTO_CONFIG)
    sqs = boto3.client("sqs", config=BOTO_CONFIG)
    _ensure_bucket(s3, settings.behaviour_bucket)
    tables = sorted({settings.state_table, settings.risk_table})
    indexes = {}
    for table in tables:
        _ensure_table(dynamodb, table)
        _ensure_ttl(dynamodb, table)
        # On every table, as the Terraform declares them: only risk items carry its key, so a state table's stays empty.
        indexes[table] = _ensure_tier_index(dynamodb, table)
    queues = {tier: _ensure_queue(sqs, name) for tier, name in settings.queues.items()}
    files = _ensure_files_queues(sqs, settings)
    return {
        "bucket": settings.behaviour_bucket,
        "tables": tables,
        "tier_index": indexes,  # table -> ACTIVE, or CREATING when its build outlasted the wait
        "queues": queues,
        "files_queues": files,
    }


def _ensure_bucket(s3: Any, bucket: str) -> None:
    region = s3.meta.region_name
    try:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.get_waiter("bucket_exists").wait(Bucket=bucket)
    # Versioning lets the handler read exactly the version that triggered it.
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


def _ensure_table(dynamodb: Any, table: str) -> None:
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):  # it exists already
        dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification={"Enabled": True},
        )
    dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 2, "MaxAttempts": 60})


def tier_index() -> dict[str, Any]:
    """Return the risk table's tier index (lookup/tier_index.py): keyed by tier pair and shard, then user id; it
    projects only what a lookup shows, so a shared table's state blob is never copied into it."""
    return {
        "IndexName": INDEX_NAME,
        "KeySchema": [
            {"AttributeName": KEY_ATTRIBUTE, "KeyType": "HASH"},
            {"AttributeName": "user_id", "KeyType": "RANGE"},
        ],
        "Projection": {
            "ProjectionType": "INCLUDE",
            "NonKeyAttributes": [a for a in READ_ATTRIBUTES if a not in ("user_id", KEY_ATTRIBUTE)],
        },
    }


def _ensure_tier_index(dynamodb: Any, table: str, sleep: Any = time.sleep) -> str | None:
    """Add the tier index to a table that lacks it (one made before it existed); wait until it is built, at most
    INDEX_WAIT_SECONDS; return its status."""
    if _index_status(dynamodb, table) is None:
        try:
            dynamodb.update_table(
                TableName=table,
                AttributeDefinitions=[{"AttributeName": KEY_ATTRIBUTE, "AttributeType": "S"}],
                GlobalSecondaryIndexUpdates=[{"Create": tier_index()}],
            )
        except ClientError as exc:
            # Another bootstrap beside us added it first (or is adding it): fine once it is there.
            if _index_status(dynamodb, table) is None:
                raise exc
    waited = 0.0
    status = _index_status(dynamodb, table)
    while status != "ACTIVE" and waited < INDEX_WAIT_SECONDS:
        sleep(INDEX_POLL_SECONDS)
        waited += INDEX_POLL_SECONDS
        status = _index_status(dynamodb, table)
    return status


def _index_status(dynamodb: Any, table: str) -> str | None:
    """Return the tier index's status on `table` (CREATING, ACTIVE...), None when the table has none."""
    described = dynamodb.describe_table(TableName=table)["Table"]
    for index in described.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] == INDEX_NAME:
            return index.get("IndexStatus", "ACTIVE")
    return None


def _ensure_ttl(dynamodb: Any, table: str) -> None:
    """Make DynamoDB delete the table's items once their `expires_at` has passed (the users' retention)."""
    try:
        dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
    except ClientError as exc:
        # DynamoDB refuses to enable TTL that is already on (ValidationException): done, if it is on our
        # attribute (an earlier bootstrap, or one running beside us); not if on another one, or switching off.
        if error_code(exc) != "ValidationException" or _ttl_attribute(dynamodb, table) != TTL_ATTRIBUTE:
            raise


def _ttl_attribute(dynamodb: Any, table: str) -> str | None:
    """Return the attribute the table's TTL is on (or being turned on for), None when TTL is off."""
    described = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    return described.get("AttributeName") if described["TimeToLiveStatus"] in ("ENABLED", "ENABLING") else None


def _ensure_queue(sqs: Any, name: str) -> dict[str, str]:
    dlq_url = sqs.create_queue(
        QueueName=name + DLQ_SUFFIX,
        Attributes={"MessageRetentionPeriod": str(MESSAGE_RETENTION_SECONDS), "SqsManagedSseEnabled": "true"},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
            "MessageRetentionPeriod": str(MESSAGE_RETENTION_SECONDS),
            "SqsManagedSseEnabled": "true",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        },
    )["QueueUrl"]
    return {"url": url, "dlq_url": dlq_url}


def _ensure_files_queues(sqs: Any, settings: Settings) -> dict[str, str]:
    """Create the files queue (S3 notifications for on_behaviour_queue), its dead-letter queue, and the queue the
    failed asynchronous invocations of on_behaviour_file go to; return their URLs."""
    kept = {"MessageRetentionPeriod": str(MESSAGE_RETENTION_SECONDS), "SqsManagedSseEnabled": "true"}
    dlq_url = sqs.create_queue(QueueName=settings.files_dead_letter_queue, Attributes=kept)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    url = sqs.create_queue(
        QueueName=settings.files_queue,
        Attributes={
            **kept,
            "VisibilityTimeout": str(FILES_VISIBILITY_TIMEOUT_SECONDS),
            "RedrivePolicy": json.dumps(redrive),
        },
    )["QueueUrl"]
    failed_url = sqs.create_queue(QueueName=settings.files_failed_queue, Attributes=kept)["QueueUrl"]
    return {"url": url, "dlq_url": dlq_url, "failed_url": failed_url}
