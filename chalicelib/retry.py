"""Capped exponential backoff with full jitter, for partial batch failures.

botocore's retry modes already retry throttling errors and 5xx responses of a call; they do not
retry the items a successful BatchWriteItem / BatchGetItem / SendMessageBatch call left undone.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

MAX_ATTEMPTS = 8
BASE_DELAY = 0.05
MAX_DELAY = 5.0


def backoff_delays(
    attempts: int = MAX_ATTEMPTS, base: float = BASE_DELAY, cap: float = MAX_DELAY, rng: random.Random | None = None
) -> Iterator[float]:
    """Yield the sleep before each retry: uniform in [0, min(cap, base * 2**n)]."""
    rng = rng or random.Random()
    for n in range(attempts - 1):
        yield rng.uniform(0.0, min(cap, base * (2**n)))


def sleep(seconds: float, _sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep for `seconds` (one seam, so nothing else calls time.sleep)."""
    if seconds > 0:
        _sleep(seconds)
