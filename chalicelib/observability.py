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


def flush_metrics() -> None:
    """Publish the metrics this invocation added, if any (an empty flush would only warn)."""
    if metrics.metric_set:
        metrics.flush_metrics()
