"""Structured JSON logging and CloudWatch metrics (Powertools Logger and Metrics), shared by handlers and runs."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "churnguard")

logger = Logger(
    service=SERVICE,
    level=os.environ.get("LOG_LEVEL", os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO")),
)
# Written as CloudWatch embedded-metric log lines when app.py flushes them at the end of each invocation.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ChurnGuard"), service=SERVICE)
COUNT = MetricUnit.Count
NO_UNIT = MetricUnit.NoUnit

# Every metric the functions publish (unit Count, dimension `service`); infra/ has one alarm for each.
ROWS_REJECTED = "RowsRejected"  # rows of a finished file run rejected, by the run's total
FILES_ALL_ROWS_REJECTED = "FilesAllRowsRejected"  # file runs that read rows and could use none
FILE_ATTEMPTS_FAILED = "FileAttemptsFailed"  # attempts at a file that raised (each is retried)
FILES_QUARANTINED = "FilesQuarantined"  # files moved to quarantine/: unreadable, or failed too many attempts
RUNS_INCOMPLETE = "RunsIncomplete"  # runs that ended with a dead-letter record for `replay`
USERS_DEAD_LETTERED = "UsersDeadLettered"  # users whose work a run left in its dead-letter record
MESSAGES_DEAD_LETTERED = "MessagesDeadLettered"  # messages a run left in its dead-letter record
WRITE_CONFLICTS = "WriteConflicts"  # conditional writes that lost a race and were decided again
RETRIES = "Retries"  # retries of AWS calls and of partial batch failures, botocore's and the adapters'
SCHEDULE_USERS_NOT_COVERED = "ScheduleUsersNotCovered"  # users a schedule run stopped without re-scoring
FILES_MESSAGES_DROPPED = "FilesMessagesDropped"  # files-queue or sweep messages no retry can help (not a notification)
METRICS = (
    ROWS_REJECTED,
    FILES_ALL_ROWS_REJECTED,
    FILE_ATTEMPTS_FAILED,
    FILES_QUARANTINED,
    RUNS_INCOMPLETE,
    USERS_DEAD_LETTERED,
    MESSAGES_DEAD_LETTERED,
    WRITE_CONFLICTS,
    RETRIES,
    SCHEDULE_USERS_NOT_COVERED,
    FILES_MESSAGES_DROPPED,
)

# The run report's drift (reporting/drift.py), one value a scheduled run: a PSI, no unit; alarmed at its maximum.
SCORE_DRIFT_PSI = "ScoreDriftPSI"  # the churn score's PSI against the training distribution
FEATURE_DRIFT_PSI_MAX = "FeatureDriftPSIMax"  # the largest PSI of any model feature
DRIFT_METRICS = (SCORE_DRIFT_PSI, FEATURE_DRIFT_PSI_MAX)


def flush_metrics() -> None:
    """Publish the metrics this invocation added, if any (an empty flush would only warn)."""
    if metrics.metric_set:
        metrics.flush_metrics()
