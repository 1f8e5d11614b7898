"""The four steps of the backfill state machine, as app.py's handlers call them."""

from __future__ import annotations

from typing import Any

from chalicelib.runs.backfill.finish import BackfillFinish
from chalicelib.runs.backfill.workers import BackfillWorkers
from chalicelib.runs.chunk import ChunkWorker
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.file_run import FileRun
from chalicelib.runs.records import RunRecords


class Backfill:
    """The four steps of the backfill state machine, as app.py's handlers call them."""

    def __init__(self, ctx: RunContext, worker: ChunkWorker, records: RunRecords, files: FileRun) -> None:
        self.workers = BackfillWorkers(ctx, worker, records)
        self.finisher = BackfillFinish(ctx, records, files)

    def split(self, job: dict[str, Any]) -> dict[str, Any]:
        """Cut the file into ranges; return the keys of the maps' item lists."""
        return self.workers.split(job)

    def range(self, item: dict[str, Any]) -> dict[str, Any]:
        """Read one range into shard parts; return its summary."""
        return self.workers.read_range(item)

    def shard(self, item: dict[str, Any], deadline: Deadline | None = None) -> dict[str, Any]:
        """Merge, score and deliver one shard; return its summary."""
        return self.workers.score_shard(item, deadline)

    def finish(self, state: dict[str, Any]) -> dict[str, Any]:
        """Write the run record and the ledger from the children's summaries; return the run summary."""
        return self.finisher.finish(state)
