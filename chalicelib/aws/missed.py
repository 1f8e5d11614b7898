"""SQS adapter: the queues of failed file deliveries, which the schedule's sweep drains.

Two queues hold them: the files queue's dead-letter queue (a notification whose message failed maxReceiveCount
times) and the on-failure destination of on_behaviour_file's asynchronous invocations (Lambda's record of the
failed event, the event under `requestPayload`). A stage may have neither (its notifications go to the function
and it has no destination, or the queues were never created): a queue that does not exist is skipped.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.aws.boto import BOTO_CONFIG, error_code
from chalicelib.runs.ports import Missed

# What SQS answers for a queue that does not exist (the JSON protocol's code, and the query protocol's).
NO_SUCH_QUEUE = frozenset({"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"})
BATCH = 10
# Long polling asks every SQS server, so a queue holding a few messages never answers empty; a second is enough.
WAIT_SECONDS = 1


class MissedFileQueues:
    """Receives and deletes the messages of the failed-delivery queues, in the order the queues are named."""

    def __init__(self, client: Any, queue_names: list[str]) -> None:
        self.client = client
        self.queue_names = list(dict.fromkeys(queue_names))
        self._urls: dict[str, str] = {}

    @classmethod
    def create(cls, queue_names: list[str]) -> MissedFileQueues:
        """Return an adapter with a default client (honours AWS_ENDPOINT_URL)."""
        return cls(boto3.client("sqs", config=BOTO_CONFIG), queue_names)

    def receive(self, limit: int, hide_seconds: int) -> list[Missed]:
        """Return up to `limit` messages of the queues, each hidden from other readers for `hide_seconds`."""
        found: list[Missed] = []
        for name in self.queue_names:
            url = self._url(name)
            if url is None or not self._holds_messages(url):
                continue
            while len(found) < limit:
                resp = self.client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(BATCH, limit - len(found)),
                    VisibilityTimeout=hide_seconds,
                    WaitTimeSeconds=WAIT_SECONDS,
                )
                messages = resp.get("Messages", [])
                if not messages:
                    break
                found += [Missed(name, m["ReceiptHandle"], m["Body"]) for m in messages]
        return found

    def _holds_messages(self, url: str) -> bool:
        """Return True unless SQS counts the queue empty: an empty queue (the usual day) is not long-polled.

        The count is approximate and may lag a message sent moments ago by a minute: that one waits for the next
        sweep, which is what a message sent just after this sweep does anyway.
        """
        attributes = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]
        return int(attributes.get("ApproximateNumberOfMessages", "1")) > 0

    def delete(self, message: Missed) -> None:
        """Delete a message whose files all reached a final status."""
        url = self._url(message.queue)
        if url is not None:
            self.client.delete_message(QueueUrl=url, ReceiptHandle=message.receipt)

    def _url(self, name: str) -> str | None:
        """Return (and remember) a queue's URL; None when there is no such queue."""
        if name not in self._urls:
            try:
                self._urls[name] = self.client.get_queue_url(QueueName=name)["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) not in NO_SUCH_QUEUE:
                    raise
                return None
        return self._urls[name]
