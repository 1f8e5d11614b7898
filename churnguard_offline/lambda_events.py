"""Build the Lambda events AWS sends: S3 ObjectCreated, SQS batches of them, and EventBridge schedule (demo, tests,
replays)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from chalicelib.scoring.scorer import iso_time


def s3_object_created(
    bucket: str, key: str, *, etag: str, size: int, event_time: float, version_id: str | None = None
) -> dict[str, Any]:
    """Return an S3 ObjectCreated:Put notification as Lambda receives it (key URL-encoded)."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag, "sequencer": "0"}
    if version_id:
        obj["versionId"] = version_id
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": iso_time(event_time),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "churnguard-incoming",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": obj,
                },
            }
        ]
    }


def queued_notification(notification: dict[str, Any]) -> str:
    """Return an S3 notification as S3 puts it in an SQS body: the key URL-encoded, '/' included."""
    records = []
    for record in notification["Records"]:
        obj = record["s3"]["object"]
        key = quote_plus(unquote_plus(obj["key"]), safe="")
        records.append({**record, "s3": {**record["s3"], "object": {**obj, "key": key}}})
    return json.dumps({"Records": records})


def sqs_batch(bodies: list[str], queue: str = "churnguard-files-dev", ids: list[str] | None = None) -> dict[str, Any]:
    """Return an SQS event as Lambda's event source mapping hands it over: one record per body, each its own id."""
    ids = ids or [str(uuid.uuid4()) for _ in bodies]
    return {
        "Records": [
            {
                "messageId": message_id,
                "receiptHandle": f"receipt-{message_id}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "0",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "0",
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
                "awsRegion": "us-east-1",
            }
            for message_id, body in zip(ids, bodies, strict=True)
        ]
    }


def scheduled(at: float) -> dict[str, Any]:
    """Return an EventBridge scheduled event firing at epoch time `at`."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": iso_time(at),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/churnguard-scheduled_scoring"],
        "detail": {},
    }


@contextmanager
def stage_timeout(seconds: float) -> Iterator[None]:
    """Give handlers invoked through chalice.test.Client a context with `seconds` to run.

    The test client always builds a 3-second LambdaContext, whatever the stage's `lambda_timeout`,
    and the handlers checkpoint by the time their context says is left.
    """
    import chalice.test

    original = chalice.test.LambdaContext
    chalice.test.LambdaContext = functools.partial(original, max_runtime_ms=int(seconds * 1000))
    try:
        yield
    finally:
        chalice.test.LambdaContext = original
