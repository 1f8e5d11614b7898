"""Capped exponential backoff with full jitter, for partial batch failures and lost write races.

botocore's retry modes already retry throttling errors and 5xx responses of a call; they do not
retry the items a successful BatchWriteItem / BatchGetItem / SendMessageBatch call left undone, nor
a conditional write that lost a race.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAX_ATTEMPTS = 8
BASE_DELAY = 0.05
MAX_DELAY = 5.0


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each retry, and the one place that sleeps."""

    base: float = BASE_DELAY
    cap: float = MAX_DELAY
    attempts: int = MAX_ATTEMPTS
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delays(self) -> Iterator[float]:
        """Yield the sleep before each retry: uniform in [0, min(cap, base * 2**n)]."""
        for n in range(self.attempts - 1):
            yield self.rng.uniform(0.0, min(self.cap, self.base * (2**n)))

    def wait(self, seconds: float) -> None:
        """Sleep for `seconds` (nothing for zero)."""
        if seconds > 0:
            self.sleep(seconds)
