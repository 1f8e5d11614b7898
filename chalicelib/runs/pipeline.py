"""One scoring job from source to sinks: a landed behaviour file, the scheduled re-score, or a replay.

Every effect is safe to repeat. A run works through its users in chunks; after each chunk it writes a
checkpoint, so a redo (an event delivered again, a Lambda retry, the schedule's sweep) continues where
the last attempt stopped (see chunk.py for why a redo within a chunk is safe too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chalicelib.observability import logger as default_logger
from chalicelib.observability import metrics as default_metrics
from chalicelib.retry import Backoff
from chalicelib.runs.backfill.steps import Backfill
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.ports import Bucket, MissedFiles, Queues, Tables, Workflows
from chalicelib.runs.records import RunRecords
from chalicelib.runs.replay import Replay
from chalicelib.runs.schedule_map import ScheduleMap
from chalicelib.runs.schedule_run import ScheduleRun
from chalicelib.runs.stream import FileStream
from chalicelib.scoring.scorer import Scorer
from chalicelib.settings import Settings


class ScoringPipeline:
    """Merges behaviour files into state, scores users and delivers risk items and messages."""

    def __init__(
        self,
        settings: Settings,
        bucket: Bucket,
        tables: Tables,
        queues: Queues,
        scorer: Scorer,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        logger: Any = default_logger,
        metrics: Any = default_metrics,
        workflows: Workflows | None = None,
        missed: MissedFiles | None = None,
    ) -> None:
        self.ctx = RunContext(
            settings, bucket, tables, queues, scorer, clock, backoff or Backoff(), logger, metrics, workflows, missed
        )
        worker = ChunkWorker(self.ctx)
        records = RunRecords(self.ctx)
        self.files = FileRun(self.ctx, worker, records)
        self.schedule = ScheduleRun(self.ctx, worker, records, self.files)
        self.replays = Replay(self.ctx, worker, records)
        self.backfill = Backfill(self.ctx, worker, records, self.files)
        self.schedule_map = ScheduleMap(self.ctx, self.schedule, records)
        self.stream = FileStream(self.ctx, self.files)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def bucket(self) -> Bucket:
        return self.ctx.bucket

    @property
    def tables(self) -> Tables:
        return self.ctx.tables

    @property
    def queues(self) -> Queues:
        return self.ctx.queues

    @property
    def scorer(self) -> Scorer:
        return self.ctx.scorer

    def process_object(
        self,
        key: str,
        version_id: str | None = None,
        landed_at: float | None = None,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        """Merge one landed behaviour file into its users' state and re-score them; return the run summary."""
        return self.files.process(key, version_id, landed_at, deadline)

    def process_queue_batch(self, event: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        """Process one batch of the files queue (S3 notifications); return the partial batch response."""
        return self.stream.handle(event, deadline)

    def run_schedule(self, at: float | None = None, deadline: Deadline | None = None) -> dict[str, Any]:
        """Process missed files, then re-score every known user as of `at` (default now); return the summary."""
        return self.schedule.run(at, deadline)

    def plan_schedule(self, event: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """The schedule state machine's plan: sweep missed files, write the segment list; return what the map reads."""
        return self.schedule_map.plan(event, deadline)

    def score_segment(self, item: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """The schedule state machine's child: re-score one segment of the state table to its end."""
        return self.schedule_map.segment(item, deadline)

    def finish_schedule(self, event: dict[str, Any], seconds_left: Callable[[], float] | None = None) -> dict[str, Any]:
        """The schedule state machine's last step: the run's record and lift report from its segments'."""
        return self.schedule_map.finish(event, seconds_left)

    def lift_report(
        self, since: float | None = None, as_of: float | None = None, horizon_days: float | None = None
    ) -> dict[str, Any]:
        """Return win-back rates of treated and holdout users, per risk tier and action, with the lift."""
        return self.schedule.lift_report(since, as_of, horizon_days)

    def replay(self, run_id: str) -> dict[str, Any]:
        """Redo the users and resend the messages a run left in its dead-letter record; return the summary."""
        return self.replays.run(run_id)
