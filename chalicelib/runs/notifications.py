"""S3 notifications as SQS bodies carry them: the files queue's messages, its dead-letter queue's, and the records
Lambda writes to an on-failure destination when an asynchronous invocation of on_behaviour_file failed (the
original event under `requestPayload`).

Pure parsing: what a body names, or why it names nothing usable. Keys arrive URL-encoded (spaces as '+', '/' as
%2F in SQS bodies) and are decoded here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from chalicelib.errors import ChurnGuardError

TEST_EVENT = "s3:TestEvent"  # what S3 sends once when a notification configuration is written
DAY = 86400.0
# A file is processed only while the ledger is sure to remember it: it landed less than the ledger's retention
# ago, less this margin (a run started just inside the horizon must finish inside it too).
LEDGER_MARGIN_SECONDS = DAY


class MalformedNotificationError(ChurnGuardError):
    """A body that is not an S3 notification of created objects; retrying it cannot help."""


@dataclass(frozen=True)
class Landed:
    """One object a notification says was created."""

    bucket: str
    key: str
    version_id: str | None
    landed_at: float | None  # epoch seconds of the event, None when it has no time


def landed_objects(body: str) -> list[Landed]:
    """Return the objects an SQS body says were created ([] for S3's test event); raise MalformedNotificationError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise MalformedNotificationError("the body is not JSON") from exc
    if isinstance(doc, dict) and isinstance(doc.get("requestPayload"), dict):
        doc = doc["requestPayload"]  # a failed asynchronous invocation's record: the event it was given
    if not isinstance(doc, dict):
        raise MalformedNotificationError("the body is not a JSON object")
    if doc.get("Event") == TEST_EVENT:
        return []
    records = doc.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedNotificationError("the body has no Records")
    return [_landed(record) for record in records]


def within_ledger(landed_at: float | None, now: float, ledger_retention_seconds: float) -> bool:
    """Return True when a file that landed at `landed_at` is young enough for the ledger to know it (no time: yes)."""
    return landed_at is None or now - landed_at < ledger_retention_seconds - LEDGER_MARGIN_SECONDS


def unusable(item: Landed, bucket: str, now: float, ledger_retention_seconds: float) -> tuple[str, str] | None:
    """Return (status, why) when a landed object is not to be processed here and no retry can help; else None."""
    if item.bucket != bucket:
        return "dropped", "the notification is about another bucket"
    if not within_ledger(item.landed_at, now, ledger_retention_seconds):
        return "past_ledger_retention", "the file landed longer ago than the ledger remembers (LEDGER_RETENTION_DAYS)"
    return None


def _landed(record: Any) -> Landed:
    """Return the object one S3 record names; raise MalformedNotificationError when it is no ObjectCreated record."""
    if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
        raise MalformedNotificationError("a record is not from S3")
    if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
        raise MalformedNotificationError("a record is not about a created object")
    s3 = record.get("s3")
    bucket = s3.get("bucket") if isinstance(s3, dict) else None
    obj = s3.get("object") if isinstance(s3, dict) else None
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise MalformedNotificationError("a record names no bucket or object")
    name, key, version = bucket.get("name"), obj.get("key"), obj.get("versionId")
    if not isinstance(name, str) or not isinstance(key, str) or not key:
        raise MalformedNotificationError("a record's bucket or key is not text")
    if version is not None and not isinstance(version, str):
        raise MalformedNotificationError("a record's version id is not text")
    return Landed(name, unquote_plus(key), version or None, _epoch(record.get("eventTime")))


def _epoch(text: Any) -> float | None:
    """Return an event time (ISO 8601, 'Z' included) as epoch seconds; None when there is none."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError as exc:
        raise MalformedNotificationError("a record's eventTime is not a time") from exc
