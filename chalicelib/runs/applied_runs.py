"""The runs already merged into a user's state, kept on the state item so a redo never merges twice.

A run that dies half-way is redone from its last checkpoint; the users of the chunk in flight may or may
not have been written. Each state item carries the runs merged into it recently, and the merge skips a
user whose list names the run. The list is bounded by time, not by count: a redo comes within hours (a
Lambda retry, up to 6 h) or at the next schedule's sweep (a day), and any number of files may reach one
user in between (a minute stream sends 1,440 a day).

Each entry is 12 bytes: the first 8 bytes of the run id's SHA-256 and the epoch second it was merged.
Two days of a minute stream are 2,880 entries, 34,560 bytes; the list never grows past `MAX_ENTRIES`
(96 KiB), so a state item (its state vector is 560 bytes) stays far under DynamoDB's 400 KB. Two run ids
share a digest with a chance of about 2,880 / 2**64 per lookup. Items written before this encoding hold a
list of "run_id@epoch" strings; they are read as the same entries, so a redo of such a run is still known.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

# One entry: the run id's digest and the time it was merged (epoch seconds), big-endian, packed.
ENTRY = np.dtype([("digest", ">u8"), ("at", ">u4")])
ENTRY_BYTES = ENTRY.itemsize
# The list's share of a state item: 8,192 entries, room for 2.8 files a minute for two days.
MAX_BYTES = 96 * 1024
MAX_ENTRIES = MAX_BYTES // ENTRY_BYTES
LEGACY_SEPARATOR = "@"
_LAST_SECOND = 2**32 - 1


def digest(run_id: str) -> int:
    """Return the 64-bit digest a run id is remembered by."""
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big")


def _empty() -> np.ndarray:
    return np.empty(0, dtype=ENTRY)


@dataclass(frozen=True, eq=False)
class AppliedRuns:
    """The runs merged into one state item within the time bound, oldest first."""

    entries: np.ndarray = field(default_factory=_empty)

    @classmethod
    def load(cls, stored: bytes | Iterable[str] | None) -> AppliedRuns:
        """Return the runs of a stored attribute: packed entries, or the older list of "run_id@epoch" strings."""
        if stored is None:
            return cls()
        if isinstance(stored, (bytes, bytearray, memoryview)):
            data = bytes(stored)
            whole = len(data) - len(data) % ENTRY_BYTES  # a torn tail cannot name a run
            return cls(np.frombuffer(data[:whole], dtype=ENTRY).copy())
        return cls.from_legacy(stored)

    @classmethod
    def from_legacy(cls, entries: Iterable[str]) -> AppliedRuns:
        """Return the runs of an older list of "run_id@epoch" strings; a malformed string is dropped."""
        parsed = [p for p in (_legacy_entry(e) for e in entries) if p is not None]
        array = np.array(parsed, dtype=ENTRY) if parsed else _empty()
        return cls(array[np.argsort(array["at"], kind="stable")])

    def __len__(self) -> int:
        return len(self.entries)

    def to_bytes(self) -> bytes:
        """Return the packed entries, as stored."""
        return self.entries.astype(ENTRY, copy=False).tobytes()

    def holds(self, run_id: str) -> bool:
        """Return True when `run_id` is already merged into the state these entries belong to."""
        return bool(np.any(self.entries["digest"] == np.uint64(digest(run_id))))

    def record(self, run_id: str, at: float, max_age_seconds: float) -> tuple[AppliedRuns, int]:
        """Return the runs with `run_id` added at `at`, older ones than `max_age_seconds` dropped.

        Also returns how many entries still within the age bound had to go to keep the list under
        `MAX_ENTRIES` (0 unless one user got more than that many files within the bound).
        """
        key = np.uint64(digest(run_id))
        kept = self.entries[(self.entries["at"] >= at - max_age_seconds) & (self.entries["digest"] != key)]
        new = np.array([(key, min(max(int(at), 0), _LAST_SECOND))], dtype=ENTRY)
        merged = np.concatenate([kept, new])
        merged = merged[np.argsort(merged["at"], kind="stable")]
        overflow = max(len(merged) - MAX_ENTRIES, 0)
        return AppliedRuns(merged[overflow:]), overflow


def _legacy_entry(text: str) -> tuple[int, int] | None:
    """Return (digest, time) of one "run_id@epoch" string, or None when it is malformed."""
    run_id, sep, at = str(text).rpartition(LEGACY_SEPARATOR)
    if not sep or not run_id:
        return None
    try:
        seconds = int(float(at))
    except (ValueError, OverflowError):  # not a number, or nan / inf
        return None
    return digest(run_id), min(max(seconds, 0), _LAST_SECOND)
