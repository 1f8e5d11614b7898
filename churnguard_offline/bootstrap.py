"""Create every AWS resource the app uses, named from the environment; safe to call again."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws.boto import BOTO_CONFIG, error_code
from chalicelib.aws.tables import TTL_ATTRIBUTE
from chalicelib.settings import Settings

DLQ_SUFFIX = "-dlq"
MAX_RECEIVE_COUNT = 5
# Longer than the handler's timeout, so a message is not redelivered while still being handled.
VISIBILITY_TIMEOUT_SECONDS = 960
MESSAGE_RETENTION_SECONDS = 14 * 86400
# The files queue: hidden for six times the handler's timeout (900 s), as AWS advises for a Lambda event source.
FILES_VISIBILITY_TIMEOUT_SECONDS = 6 * 900


def ensure_resources(settings: Settings | None = None) -> dict[str, Any]:
    """Create the bucket, tables (with TTL on), queues and dead-letter queues if missing; wait until usable."""
    settings = settings or Settings.from_env()
    s3 = boto3.client("s3", config=BOTO_CONFIG)
    dynamodb = boto3.client("dynamodb", config=BOTO_CONFIG)
    sqs = boto3.client("sqs", config=BOTO_CONFIG)
    _ensure_bucket(s3, settings.behaviour_bucket)
    tables = sorted({settings.state_table, settings.risk_table})
    for table in tables:
        _ensure_table(dynamodb, table)
        _ensure_ttl(dynamodb, table)
    queues = {tier: _ensure_queue(sqs, name) for tier, name in settings.queues.items()}
    files = _ensure_files_queues(sqs, settings)
    return {"bucket": settings.behaviour_bucket, "tables": tables, "queues": queues, "files_queues": files}


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
