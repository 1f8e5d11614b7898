"""How long a run may keep going before it must checkpoint and hand over to the next invocation."""

from __future__ import annotations

import time
from collections.abc import Callable

from chalicelib.errors import RetryableError
from chalicelib.settings import DEFAULTS, ConfigError

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
        self.chunks_done = 0
        # When the invocation ends, in epoch seconds (None: unknown); a run's lease lasts until then (lease.py).
        self.ends_at: float | None = None
        self._chunk_started: float | None = None

    @classmethod
    def from_lambda_context(cls, context: object, reserve: float = DEFAULT_RESERVE_SECONDS) -> Deadline:
        """Return a deadline read from a Lambda context (none when there is no context); see `check_start`."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls(None, reserve)
        deadline = cls(lambda: remaining() / 1000.0, reserve)
        deadline.check_start()
        deadline.ends_at = time.time() + remaining() / 1000.0
        return deadline

    def start_chunk(self) -> None:
        """Note that a chunk of work starts now."""
        self._chunk_started = self.clock()

    def end_chunk(self) -> None:
        """Note that the chunk started last has finished (its duration predicts the next one)."""
        if self._chunk_started is not None:
            self.longest_chunk = max(self.longest_chunk, self.clock() - self._chunk_started)
            self._chunk_started = None
            self.chunks_done += 1

    def room_for_another(self) -> bool:
        """Return True when one more chunk (as long as the longest so far) plus the reserve still fits.

        Every invocation does at least one chunk, so a run always makes progress; an invocation too short for
        even that is refused at its start (`check_start`) instead of checkpointing "after 0 chunks" for ever.
        """
        if self.seconds_left is None or self.chunks_done == 0:
            return True
        return self.seconds_left() > self.reserve + 1.5 * self.longest_chunk

    def check_start(self) -> None:
        """Raise ConfigError when the invocation starts with no more time than the reserve (no chunk could run)."""
        left = None if self.seconds_left is None else self.seconds_left()
        if left is not None and left <= self.reserve:
            raise ConfigError(
                f"the invocation has {left:.1f}s left, no more than the checkpoint reserve"
                f" (CHECKPOINT_RESERVE_SECONDS={self.reserve:g}): raise the function's timeout or lower the reserve"
            )
