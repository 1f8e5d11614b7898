"""The runs already merged into a user's state, kept on the state item so a redo never merges twice.

A run that dies half-way is redone from its last checkpoint; the users of the chunk in flight may
or may not have been written. Each state item carries the ids of the runs merged into it recently,
and the merge skips a user whose list names the run. The list is bounded by age and length: a run
is redone within minutes (a Lambda retry) or at the next schedule (a day), far inside the bounds.
"""

from __future__ import annotations

SEPARATOR = "@"


def entry(run_id: str, at: float) -> str:
    """Return the list entry saying `run_id` was merged at epoch time `at`."""
    return f"{run_id}{SEPARATOR}{int(at)}"


def was_applied(entries: list[str], run_id: str) -> bool:
    """Return True when `run_id` is already merged into the state these entries belong to."""
    prefix = run_id + SEPARATOR
    return any(e.startswith(prefix) for e in entries)


def record(entries: list[str], run_id: str, at: float, keep: int, max_age_seconds: float) -> list[str]:
    """Return the entries with `run_id` added, dropping those older than `max_age_seconds` and beyond `keep`."""
    fresh = [e for e in entries if _time(e) >= at - max_age_seconds and not e.startswith(run_id + SEPARATOR)]
    fresh.append(entry(run_id, at))
    fresh.sort(key=_time)
    return fresh[-keep:]


def _time(e: str) -> float:
    try:
        return float(e.rsplit(SEPARATOR, 1)[1])
    except (IndexError, ValueError):
        return float("-inf")  # a malformed entry is the first to go
