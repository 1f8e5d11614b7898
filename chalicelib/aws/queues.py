"""SQS adapter: retention messages to one queue per actionable risk tier."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws.boto import BOTO_CONFIG, error_code, retry_attempts
from chalicelib.retry import Backoff
from chalicelib.runs.ports import Sent

BATCH = 10
# Whole-call errors worth another try once botocore's own retries are spent.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "RequestThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "InternalError",
        "ServiceUnavailable",
    }
)
# SQS counts a message's body and its attributes' names, types and values against one limit, and the messages
# of a batch together against the same number. 256 KiB is what every queue accepts (a queue may now be set to
# take up to 1 MiB, but one at the old default would refuse more).
MAX_MESSAGE_BYTES = 256 * 1024


class RetentionQueues:
    """Sends retention messages in batches of ten, retrying the entries SQS failed."""

    batch_size = BATCH

    def __init__(self, client: Any, queue_names: dict[str, str], backoff: Backoff | None = None) -> None:
        self.client = client
        self.backoff = backoff or Backoff()
        self.queue_names = dict(queue_names)
        self._urls: dict[str, str] = {}
        self.calls = 0
        self.retries: Counter[str] = Counter()

    @classmethod
    def create(cls, queue_names: dict[str, str], backoff: Backoff) -> RetentionQueues:
        """Return an adapter with a default client (honours AWS_ENDPOINT_URL)."""
        return cls(boto3.client("sqs", config=BOTO_CONFIG), queue_names, backoff)

    def url(self, tier: str) -> str:
        """Return (and remember) the URL of a tier's queue."""
        if tier not in self._urls:
            self._urls[tier] = self.client.get_queue_url(QueueName=self.queue_names[tier])["QueueUrl"]
        return self._urls[tier]

    def send(self, tier: str, messages: list[dict[str, Any]]) -> Sent:
        """Send messages to the tier's queue; return how many were accepted, still failing and refused.

        A message SQS refuses for what it holds (a character outside its set, over 256 KiB) is refused alone,
        with its reason, and never resent; the others of its batch go once.
        """
        url = self.url(tier) if messages else ""
        entries, refused = [], []
        for i, message in enumerate(messages):
            entry = _entry(str(i), message)
            too_big = _too_big(entry, message)
            if too_big is None:
                entries.append(entry)
            else:
                refused.append((message, too_big))
        sent, failed = 0, []
        for batch in _batches(entries):
            left, bad = self._send_batch(url, batch)
            sent += len(batch) - len(left) - len(bad)
            failed += [messages[int(i)] for i in left]
            refused += [(messages[int(i)], why) for i, why in bad.items()]
        return Sent(sent, failed, refused)

    def _send_batch(self, url: str, entries: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
        """Send one batch, resending failed entries with backoff; return the ids that never went through and
        the ids SQS refused for their content (with its reason)."""
        pending, refused = entries, {}
        for delay in (*self.backoff.delays(), None):
            self.calls += 1
            try:
                resp = self.client.send_message_batch(QueueUrl=url, Entries=pending)
            except ClientError as exc:
                # Throttling that outlived botocore's retry quota: the whole batch failed, try it again.
                code = error_code(exc)
                if code not in TRANSIENT_CODES:
                    raise
                if delay is None:
                    break  # the whole batch goes back as failed, to the dead-letter record
                self.retries[f"SendMessageBatch.{code}"] += 1
                self.backoff.wait(delay)
                continue
            # Throttling and 5xx are retried inside botocore; count those too.
            self.retries["SendMessageBatch"] += retry_attempts(resp)
            refused.update(_sender_faults(resp))
            failed = {f["Id"] for f in resp.get("Failed", [])} - set(refused)
            pending = [e for e in pending if e["Id"] in failed]
            if not pending or delay is None:
                break
            self.retries["SendMessageBatch.Failed"] += 1
            self.backoff.wait(delay)
        return [e["Id"] for e in pending], refused


def _sender_faults(resp: dict[str, Any]) -> dict[str, str]:
    """Return the entries SQS refused for what they hold (id -> its code and message): resending cannot help."""
    return {f["Id"]: f"{f.get('Code')}: {f.get('Message')}" for f in resp.get("Failed", []) if f.get("SenderFault")}


def _entry(entry_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """Return the SendMessageBatch entry of a message."""
    attrs = {
        "risk_tier": message["risk_tier"],
        "value_tier": message["value_tier"],
        "channel": message["action"]["channel"],
    }
    return {
        "Id": entry_id,
        "MessageBody": json.dumps(message, separators=(",", ":"), ensure_ascii=False),
        "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in attrs.items()},
    }


def _too_big(entry: dict[str, Any], message: dict[str, Any]) -> str | None:
    """Return why SQS would refuse the entry's size, or None when it fits."""
    size = _size(entry)
    if size <= MAX_MESSAGE_BYTES:
        return None
    # Named by its id and size only: the body holds the user's id and message text.
    return (
        f"message {message.get('message_id')} is {size} bytes with its attributes;"
        f" SQS takes at most {MAX_MESSAGE_BYTES}"
    )


def _size(entry: dict[str, Any]) -> int:
    """Return the bytes SQS counts for an entry: the body plus each attribute's name, type and value."""
    size = len(entry["MessageBody"].encode())
    for name, attr in entry["MessageAttributes"].items():
        size += len(name.encode()) + len(attr["DataType"].encode()) + len(attr["StringValue"].encode())
    return size


def _batches(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Return the entries in runs of at most BATCH that together stay within MAX_MESSAGE_BYTES."""
    batches: list[list[dict[str, Any]]] = []
    total = 0
    for entry in entries:
        size = _size(entry)
        if not batches or len(batches[-1]) == BATCH or total + size > MAX_MESSAGE_BYTES:
            batches.append([])
            total = 0
        batches[-1].append(entry)
        total += size
    return batches
