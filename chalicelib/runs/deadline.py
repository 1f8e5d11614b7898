"""How long a run may keep going before it must checkpoint and hand over to the next invocation."""

from __future__ import annotations

import time
from collections.abc import Callable

from chalicelib.errors import RetryableError
from chalicelib.settings import DEFAULTS

# Kept free at the end of an invocation: the checkpoint and the summary are written in it.
DEFAULT_RESERVE_SECONDS: float = DEFAULTS["checkpoint_reserve_seconds"]


class RunInterrupted(RetryableError):
    """A run stopped at a checkpoint because its invocation was about to run out of time."""

    def __init__(self, run_id: str, done: int, total: int | None) -> None:
        self.run_id = run_id
        self.done = done
        self.total = total
        of = f" of {total}" if total is not None else ""
        super().__init__(f"run {run_id} checkpointed after {done}{of} chunks; the next invocation continues it")


class Deadline:
    """Tells a run whether another chunk fits in the time its invocation has left."""

    def __init__(
        self,
        seconds_left: Callable[[], float] | None = None,
        reserve: float = DEFAULT_RESERVE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds_left = seconds_left
        self.reserve = reserve
        self.clock = clock
        self.longest_chunk = 0.0
        self._chunk_started: float | None = None

    @classmethod
    def from_lambda_context(cls, context: object, reserve: float = DEFAULT_RESERVE_SECONDS) -> Deadline:
        """Return a deadline read from a Lambda context (none when there is no context)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls(None, reserve)
        return cls(lambda: remaining() / 1000.0, reserve)

    def start_chunk(self) -> None:
        """Note that a chunk of work starts now."""
        self._chunk_started = self.clock()

    def end_chunk(self) -> None:
        """Note that the chunk started last has finished (its duration predicts the next one)."""
        if self._chunk_started is not None:
            self.longest_chunk = max(self.longest_chunk, self.clock() - self._chunk_started)
            self._chunk_started = None

    def room_for_another(self) -> bool:
        """Return True when one more chunk (as long as the longest so far) plus the reserve still fits."""
        if self.seconds_left is None:
            return True
        return self.seconds_left() > self.reserve + 1.5 * self.longest_chunk
