"""Structured JSON logging (Powertools Logger), shared by the handlers and the pipeline."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

logger = Logger(
    service=os.environ.get("POWERTOOLS_SERVICE_NAME", "churnguard"),
    level=os.environ.get("LOG_LEVEL", os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO")),
)
