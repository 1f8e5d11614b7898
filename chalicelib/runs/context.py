"""What every part of a run works with: settings, the three stores, the scorer, the clock, backoff and logger."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chalicelib.observability import logger as default_logger
from chalicelib.observability import metrics as default_metrics
from chalicelib.retry import Backoff
from chalicelib.runs.ports import Bucket, MissedFiles, Queues, Tables, Workflows
from chalicelib.scoring.scorer import Scorer
from chalicelib.settings import Settings


@dataclass
class RunContext:
    """The collaborators of one container's runs, handed in so tests can replace any of them."""

    settings: Settings
    bucket: Bucket
    tables: Tables
    queues: Queues
    scorer: Scorer
    clock: Callable[[], float] = time.time
    backoff: Backoff = field(default_factory=Backoff)
    logger: Any = default_logger
    metrics: Any = default_metrics  # Powertools Metrics: add_metric(name=, unit=, value=)
    workflows: Workflows | None = None  # None: no state machine is deployed, every run stays in one invocation
    missed: MissedFiles | None = None  # the queues of failed deliveries the schedule's sweep drains; None: none
