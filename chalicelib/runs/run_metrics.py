"""The CloudWatch metrics of a finished run, read from its summary: what went wrong, counted where alarms see it."""

from __future__ import annotations

from typing import Any

from chalicelib.observability import (
    COUNT,
    FILES_QUARANTINED,
    MESSAGES_DEAD_LETTERED,
    RETRIES,
    ROWS_REJECTED,
    RUNS_INCOMPLETE,
    USERS_DEAD_LETTERED,
    WRITE_CONFLICTS,
)

# The statuses of a file run that moved its file to quarantine/.
QUARANTINED = ("unreadable", "quarantined")


def run_counts(summary: dict[str, Any]) -> dict[str, int]:
    """Return each metric's value for a finished run (a run that was only a duplicate counts nothing)."""
    status = summary.get("status")
    delivery = summary.get("delivery", {})
    dead = delivery.get("dead_lettered", {})
    return {
        ROWS_REJECTED: int(summary.get("rows", {}).get("rejected", 0)),
        FILES_QUARANTINED: int(status in QUARANTINED),
        RUNS_INCOMPLETE: int(status == "incomplete"),
        USERS_DEAD_LETTERED: int(dead.get("users", 0)),
        MESSAGES_DEAD_LETTERED: int(dead.get("messages", 0)),
        WRITE_CONFLICTS: int(delivery.get("write_conflicts", 0)),
        RETRIES: sum(int(n) for n in delivery.get("retries", {}).values()),
    }


def publish_run(metrics: Any, summary: dict[str, Any]) -> None:
    """Add the run's non-zero counts to the invocation's metrics (app.py's middleware flushes them)."""
    for name, value in run_counts(summary).items():
        if value:
            metrics.add_metric(name=name, unit=COUNT, value=value)
