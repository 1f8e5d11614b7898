"""How much of a behaviour file one function can hold: measured bytes per event and per user, and the limits.

A file run holds every accepted event of its file at once (the reader's columns, the per-user state build and
the index of event times), so the events and users a file may bring follow from the function's memory. The
reader counts them as rows stream in and refuses the file as soon as the estimate passes the budget.
"""

from __future__ import annotations

# Measured with `scripts/benchmark.py --memory-only` (tracemalloc peak of read + state build + event index,
# fitted by least squares over 1-2 M events of 10,000-400,000 users: 81 bytes per event, 1,037 per user) and
# checked against RSS in a fresh process (2 M events: +193 MiB with 10,000 users, +616 MiB with 400,000 users,
# which is 96 and 1,136). Rounded up, so the estimate errs towards refusing.
BYTES_PER_EVENT = 100
BYTES_PER_USER = 1200
# Held before any file is read: measured 170 MiB RSS for Python, boto3, the app and the loaded model; the rest
# is room for one chunk's reads, scores and messages.
FIXED_MIB = 256
# Of what is left, the share a file may take: allocator slack and the numpy temporaries of a chunk.
HEADROOM = 0.8
# The widest row the inflation limit allows for at full budget (extra columns are ignored but still inflated).
ROW_BYTES = 256
# The dev stage's lambda_memory_size: the memory assumed where Lambda does not say (tests, the demo).
DEFAULT_FUNCTION_MEMORY_MB = 2048
_MIB = 1 << 20


def file_memory_budget_mb(function_memory_mb: float) -> float:
    """Return the MiB one file's events and users may take in a function with this much memory (MB)."""
    return max(function_memory_mb - FIXED_MIB, 0) * HEADROOM


def inflation_limit(budget_bytes: int) -> int:
    """Return the decompressed bytes a gzip file may reach: as many rows as the budget holds, each ROW_BYTES."""
    return max(1, budget_bytes // BYTES_PER_EVENT * ROW_BYTES)


def held_bytes(events: int, users: int) -> int:
    """Return the estimated bytes a file run holds for this many accepted events of this many users."""
    return events * BYTES_PER_EVENT + users * BYTES_PER_USER


def mib(n_bytes: int) -> str:
    """Return a byte count as MiB for a message."""
    return f"{n_bytes / _MIB:,.0f} MiB"
