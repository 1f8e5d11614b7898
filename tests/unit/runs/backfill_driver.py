"""Drives the backfill's workers the way its state machine does: split, every range, every shard, finish.

The children run in the order a test gives (shuffled: a Distributed Map promises none), from the item lists the
split wrote for the maps' ItemReaders.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from chalicelib.runs.pipeline import ScoringPipeline
from chalicelib.runs.ports import BACKFILL
from tests.fakes import FakeBucket, FakeWorkflows


def items(bucket: FakeBucket, key: str) -> list[dict[str, Any]]:
    """Return a map's item list, as its ItemReader reads it."""
    return json.loads(bucket.backfill[key.removeprefix("backfill/")])


def run_backfill(
    pipeline: ScoringPipeline,
    workflows: FakeWorkflows,
    run_id: str,
    seed: int = 0,
    child: Callable[[str, dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Run a started backfill execution to its end; return the finish step's summary.

    `child(kind, item)` runs each map child ("range" or "shard"), so a test can kill one; by default the
    workers are called directly.
    """
    backfill, bucket = pipeline.backfill, pipeline.bucket
    state: dict[str, Any] = dict(workflows.executions[(BACKFILL, run_id)])
    state["split"] = backfill.split(state)
    rng = random.Random(seed)
    run = child or (lambda kind, item: getattr(backfill, kind)(item))
    for kind in ("range", "shard"):
        todo = items(bucket, state["split"][f"{kind}s_key"])
        rng.shuffle(todo)
        for item in todo:
            run(kind, item)
    return backfill.finish(state)
