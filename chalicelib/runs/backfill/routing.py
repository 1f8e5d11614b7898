"""When a file goes to the backfill state machine instead of one invocation, and how it is cut up.

Before a file is read only its size is known, not how many events and users it holds, so the bounds below take
the worst case a valid file can be: every row as short as rows get and every row a new user. Routing a file that
would have fitted costs a few Lambda invocations and state transitions; keeping one that does not costs the file
(too_large, or three attempts that run out of time).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from chalicelib.ingest.budget import BYTES_PER_EVENT, BYTES_PER_USER
from chalicelib.runs.context import RunContext
from chalicelib.runs.ports import BACKFILL, S3Object
from chalicelib.settings import Settings

# The status of a file run handed to the backfill state machine: not final, its finish step writes the record.
HANDED_OVER = "handed_over"

# The shortest rows real logs have: "u1,2026-01-01,login,\n" is 21 bytes; ids and times are rarely shorter.
MIN_ROW_BYTES = 24
# Seconds of merge, score and deliver per user in a file run: the schedule's measured 0.5-1.0 s per page of
# 1,000 users at 1.19 DynamoDB calls per user, times the file run's 2.40 calls per user, at the slow end.
SECONDS_PER_USER = 1.0 / 1000 * 2.40 / 1.19
# What a gzip behaviour file inflates to, at most, for routing (generated and exported CSV logs measure 4-7x);
# one that inflates further and is kept is still bounded by the reader's memory budget (too_large).
GZIP_RATIO = 10
# Shards per range: with users hashed to shards, a shard then holds about half a range's events.
SHARDS_PER_RANGE = 2
MAX_SHARDS = 10_000


def memory_bound_bytes(budget_bytes: int) -> int:
    """Return the most bytes of rows one function can hold whatever they are (every row a new, short one)."""
    return max(1, budget_bytes * MIN_ROW_BYTES // (BYTES_PER_EVENT + BYTES_PER_USER))


def time_bound_bytes(seconds: float) -> int:
    """Return the most bytes of rows whose users one invocation can merge, score and deliver in `seconds`."""
    return max(1, int(seconds / SECONDS_PER_USER) * MIN_ROW_BYTES)


def threshold_bytes(settings: Settings, seconds_left: float | None) -> int:
    """Return the (decompressed) size past which a file goes to the backfill: the setting, else the lesser bound."""
    if settings.backfill_threshold_bytes is not None:
        return settings.backfill_threshold_bytes
    bound = memory_bound_bytes(settings.file_memory_budget_bytes)
    if seconds_left is not None:
        bound = min(bound, time_bound_bytes(max(seconds_left - settings.checkpoint_reserve_seconds, 0.0)))
    return bound


def estimated_bytes(key: str, size: int, max_decompressed: int) -> int:
    """Return what an object's rows may amount to: its size, or for gzip its size times GZIP_RATIO (bounded)."""
    if key.lower().endswith(".gz"):
        return min(size * GZIP_RATIO, max_decompressed)
    return size


def range_bytes(settings: Settings) -> int:
    """Return the size of one backfill range: the setting, else what one range child can hold."""
    if settings.backfill_range_bytes is not None:
        return settings.backfill_range_bytes
    return memory_bound_bytes(settings.file_memory_budget_bytes)


def shard_count(settings: Settings, ranges: int) -> int:
    """Return how many shards a backfill of `ranges` ranges spreads its users over."""
    if settings.backfill_shards is not None:
        return settings.backfill_shards
    return max(1, min(MAX_SHARDS, ranges * SHARDS_PER_RANGE))


def ranges_for(total_bytes: int, size: int) -> int:
    """Return about how many ranges of `size` bytes `total_bytes` makes."""
    return max(1, math.ceil(total_bytes / size))


def backfill_job(run_id: str, obj: S3Object, source: str, landed_at: float) -> dict[str, Any]:
    """Return the input of a backfill execution: the exact object version and when it landed."""
    return {
        "run_id": run_id,
        "key": obj.key,
        "version_id": obj.version_id,
        "etag": obj.etag,
        "identity": obj.identity,
        "size": obj.size,
        "source": source,
        "landed_at": landed_at,
    }


def hand_over(
    ctx: RunContext, obj: S3Object, summary: dict[str, Any], landed_at: float, seconds_left: Callable[[], float] | None
) -> bool:
    """Start the backfill of a file too large for one invocation; return True (the summary saying so) if it did.

    The execution is named after the run id: a duplicate event finds it started and starts nothing.
    `already_started` is True when Step Functions said so (it answers a start of a running execution with the
    same input by returning that execution, so False does not prove the start was the first).
    """
    workflows = ctx.workflows
    if workflows is None or not workflows.available(BACKFILL):
        return False
    settings = ctx.settings
    size = estimated_bytes(obj.key, obj.size, settings.max_decompressed_bytes)
    # Asked only here, once the state machine is there: a deadline's clock is the invocation's, not ours to spend.
    derived = seconds_left is not None and settings.backfill_threshold_bytes is None
    limit = threshold_bytes(settings, seconds_left() if derived else None)
    if size <= limit:
        return False
    started = workflows.start(
        BACKFILL, summary["run_id"], backfill_job(summary["run_id"], obj, summary["source"], landed_at)
    )
    summary.update(
        status=HANDED_OVER,
        execution_arn=started.execution_arn,
        already_started=not started.new,
        why=f"about {size:,} bytes of rows, past the {limit:,} one invocation holds",
    )
    ctx.logger.info(
        "file handed to the backfill", extra={"run_id": summary["run_id"], "execution": started.execution_arn}
    )
    return True
