"""The steady stream of landed files through SQS: one batch of the files queue, each message on its own.

Each message is an S3 notification; each object it names goes through the same file run as an S3-triggered one
(`FileRun.process`: the ledger, the lease, checkpoints and attempts apply unchanged). Powertools' BatchProcessor
returns the messages that must come again in `batchItemFailures`; every other message is deleted.

What a message's outcome is:
- every file reached a final status (succeeded, duplicate, quarantined, refused...): deleted;
- not a usable notification (not JSON, not S3's, another bucket) or a file past the ledger's retention: deleted,
  with a warning line and a count (FilesMessagesDropped), since no retry can help;
- a file in progress in another attempt (`in_progress`), overtaken (`lease_lost`), checkpointed out of time
  (RunInterrupted), or failing (counted by runs/attempts.py, quarantined after MAX_FILE_ATTEMPTS): failed back,
  so SQS delivers it again after the visibility timeout, and the redelivery continues or finds it done; after the
  queue's maxReceiveCount it waits in the dead-letter queue for the schedule's sweep (runs/sweep.py);
- no time left in the invocation for another file: failed back unstarted, never started and cut.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from chalicelib.errors import RetryableError
from chalicelib.observability import COUNT, FILES_MESSAGES_DROPPED
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.notifications import Landed, MalformedNotificationError, landed_objects, unusable

# A file run that ended so is not finished: its message must come again.
NOT_DONE = frozenset({"in_progress", "lease_lost"})


class FileNotDoneError(RetryableError):
    """A file of the message is being processed by another attempt, or was taken over; it comes again later."""


class NoTimeLeftError(RetryableError):
    """The invocation has no time for another file: the message goes back unstarted."""


class BatchBudget:
    """Tells whether another message fits in what is left of the invocation, from the longest message so far."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.longest = 0.0
        self.started = 0
        self.spent = False  # once one message did not fit, none after it starts either

    def room_for_another(self) -> bool:
        """Return True when one more message, as long as the longest so far, plus the reserve still fits."""
        left = self.deadline.seconds_left
        if self.spent or left is None or self.started == 0:
            return not self.spent
        longest = max(self.longest, self.deadline.longest_chunk)
        self.spent = left() <= self.deadline.reserve + 1.5 * longest
        return not self.spent

    def timed(self, started: float, ended: float) -> None:
        """Note how long one message took."""
        self.started += 1
        self.longest = max(self.longest, ended - started)


class FileStream:
    """Processes one batch of the files queue, each message failing or succeeding alone."""

    def __init__(self, ctx: RunContext, files: FileRun) -> None:
        self.ctx = ctx
        self.files = files

    def handle(self, event: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """Process every message of an SQS event; return the partial batch response (the messages to retry)."""
        budget = BatchBudget(deadline)
        # Every message failing is still an answer, not an error: each comes again on its own.
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        return process_partial_response(
            event=event, record_handler=lambda record: self.message(record, budget), processor=processor
        )

    def message(self, record: SQSRecord, budget: BatchBudget) -> list[dict[str, Any]]:
        """Process the files of one message; return their summaries; raise when the message must come again."""
        if not budget.room_for_another():
            raise NoTimeLeftError(f"no time left for message {record.message_id}")
        try:
            landed = landed_objects(record.body)
        except MalformedNotificationError as exc:
            self._dropped(record.message_id, str(exc))
            return []
        clock = budget.deadline.clock
        started = clock()
        try:
            return [self._file(record.message_id, item, budget.deadline) for item in landed]
        except Exception as exc:  # logged, then raised: the batch processor fails this message alone
            self.ctx.logger.warning(
                "files message failed", extra={"message_id": record.message_id, "error": type(exc).__name__}
            )
            raise
        finally:
            budget.timed(started, clock())

    def _file(self, message_id: str, item: Landed, deadline: Deadline) -> dict[str, Any]:
        """Process one object a message names; raise FileNotDoneError when its run did not finish here."""
        refused = unusable(item, self.ctx.bucket.bucket, self.ctx.clock(), self.ctx.settings.ledger_retention_seconds)
        if refused is not None:
            self._dropped(message_id, refused[1])
            return {"status": refused[0], "key": item.key}
        summary = self.files.process(item.key, item.version_id, item.landed_at, deadline)
        if summary.get("status") in NOT_DONE:
            raise FileNotDoneError(f"run {summary.get('run_id')} ended {summary['status']}")
        return summary

    def _dropped(self, message_id: str, why: str) -> None:
        """Log and count a message (or one record of it) that no retry can help."""
        self.ctx.logger.warning("files message dropped", extra={"message_id": message_id, "why": why})
        self.ctx.metrics.add_metric(name=FILES_MESSAGES_DROPPED, unit=COUNT, value=1)
