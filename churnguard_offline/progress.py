"""Progress of the long offline commands (train, score) on stderr: each step with its time, counted ones with an ETA.

Each step ends as one line, "[0:00:15] fitting hgb on 40,000 rows: 3.4s" (the time since the command began, then
the step's own). On a terminal the step that runs is shown while it runs, a counted step (origins, chunks of users)
as a tqdm bar with its rate and time left; in a log or a pipe there is only the one line per step. `quiet` says
nothing, and a step that fails leaves its line to the command's error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, TextIO, TypeVar

T = TypeVar("T")
_CLEAR_LINE = "\r\x1b[K"


def clock_text(seconds: float) -> str:
    """Return a duration as h:mm:ss."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Steps:
    """Says the steps of one command on `stream` (stderr), as its `progress` callback: call it with each step."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        quiet: bool = False,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = self.stream.isatty() if live is None else live
        self.clock = clock
        self.started = clock()
        self.step: str | None = None
        self.step_started = self.started

    def __call__(self, message: str) -> None:
        """End the step that runs, if any, and begin the step `message`."""
        self._end()
        self.step, self.step_started = message, self.clock()
        if self.live and not self.quiet:
            self._write(f"{message} …")

    def each(self, items: Iterable[T], total: int, unit: str, size: Callable[[T], int] | None = None) -> Iterator[T]:
        """Yield `items`, the step that runs counting `total` units through them (each item `size` units, else 1)."""
        if not self.live or self.quiet:
            yield from items
            return
        from tqdm import tqdm

        self._write(_CLEAR_LINE)
        with tqdm(total=total, unit=unit, desc=self.step, leave=False, file=self.stream, unit_scale=True) as bar:
            for item in items:
                yield item
                bar.update(size(item) if size else 1)

    @contextlib.contextmanager
    def reading(self, raw: BinaryIO) -> Iterator[BinaryIO]:
        """Yield the opened file `raw`, its bytes counted by the step that runs on a bar (on a terminal)."""
        if not self.live or self.quiet:
            yield raw
            return
        from tqdm import tqdm

        self._write(_CLEAR_LINE)
        size = os.fstat(raw.fileno()).st_size
        with tqdm.wrapattr(raw, "read", total=size, desc=self.step, leave=False, file=self.stream) as wrapped:
            yield wrapped

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        """End the last step; when the command raised, leave its line to the error (one line, as the contract says)."""
        if error is None:
            self._end()
        elif self.live and not self.quiet:
            self._write(_CLEAR_LINE)

    @property
    def elapsed(self) -> float:
        """Return the seconds since the command began."""
        return self.clock() - self.started

    def _end(self) -> None:
        """Write the line of the step that runs (none when none does)."""
        if self.step is None:
            return
        now = self.clock()
        took = now - self.step_started
        if not self.quiet:
            start = _CLEAR_LINE if self.live else ""
            self._write(f"{start}[{clock_text(now - self.started)}] {self.step}: {took:.1f}s\n")
        self.step = None

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def each(progress: Callable[[str], None], items: Iterable[T], total: int, unit: str) -> Iterable[T]:
    """Return `items` counted by the step that runs when `progress` is a Steps, else `items` as they are."""
    return progress.each(items, total, unit) if isinstance(progress, Steps) else items
