"""What an SQS body says was created: S3 notifications, failed invocations' records, and bodies that say nothing."""

from __future__ import annotations

import json

import pytest

from chalicelib.runs.notifications import (
    LEDGER_MARGIN_SECONDS,
    Landed,
    MalformedNotificationError,
    landed_objects,
    within_ledger,
)
from churnguard_offline.lambda_events import queued_notification, s3_object_created

AT = 1_780_000_000.0


def body(key: str = "incoming/a b/c+d.csv", version: str | None = "v1") -> str:
    return queued_notification(s3_object_created("bkt", key, etag="e", size=1, event_time=AT, version_id=version))


def test_a_notification_names_its_object_with_the_key_decoded():
    assert "incoming%2Fa+b%2Fc%2Bd.csv" in body()
    assert landed_objects(body()) == [Landed("bkt", "incoming/a b/c+d.csv", "v1", AT)]


def test_a_failed_invocation_record_names_the_objects_of_the_event_it_carries():
    record = {"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": json.loads(body(version=None))}
    assert landed_objects(json.dumps(record)) == [Landed("bkt", "incoming/a b/c+d.csv", None, AT)]


def test_s3s_test_event_names_nothing():
    assert landed_objects(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        "null",
        json.dumps({"Records": []}),
        json.dumps({"Records": [{"eventSource": "aws:sns"}]}),
        json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete"}]}),
        json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put", "s3": []}]}),
        body().replace('"key": "incoming', '"key": 7, "x": "'),
        body().replace('"eventTime": "', '"eventTime": "not a time'),
        "[" * 100_000,
    ],
)
def test_a_body_that_is_no_notification_of_created_objects_is_malformed(text):
    with pytest.raises(MalformedNotificationError):
        landed_objects(text)


def test_a_file_is_within_the_ledger_only_while_its_record_cannot_have_expired():
    retention = 35 * 86400
    assert within_ledger(AT, AT + retention - LEDGER_MARGIN_SECONDS - 1, retention)
    assert not within_ledger(AT, AT + retention - LEDGER_MARGIN_SECONDS, retention)
    assert within_ledger(None, AT, retention)
