"""Training on a sample of users: chosen by a hash of `user_id`, stratified by activity, read in two passes.

The first pass streams the file and keeps, per user, only a 64-bit hash of the id, the events at or
before the cutoff and the time of the latest of them. The sample is chosen from those (each activity
stratum at the same rate, the lowest hashes first), and the second pass streams the file again, keeping
only the sampled users' events. Memory follows the population's users (24 bytes each) and the sample's
events, never the whole log; the same users come out for the same N and data, whatever the row order.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from chalicelib.errors import InputError, UnreadableFileError
from chalicelib.ingest.reader import _gc_paused, _read
from chalicelib.ingest.rejects import RejectWriter
from chalicelib.ingest.validate import Builder
from chalicelib.scoring.events import SECONDS_PER_DAY, EventBatch
from chalicelib.scoring.scorer import iso_time

HASH_RULE = (
    "users ordered by blake2b (8-byte digest, read big-endian) of the UTF-8 user_id; "
    "in each stratum the lowest hashes are taken"
)
# Strata: events at or before the cutoff in powers of two (1, 2-3, 4-7, ..., 1024+) by days from the latest
# of them to the cutoff. Fixed edges, so the rule is the same on every file and reads back from the manifest.
COUNT_BUCKETS = 11
RECENCY_EDGES_DAYS = (7.0, 30.0, 90.0, 180.0)
# The sample passes stream, so a large file costs time, not memory; the reader's gzip-bomb limit (sized for
# one function's memory) would refuse the very histories sampling is for.
MAX_INFLATED_BYTES = 1 << 40
_READ_ROWS = 4096  # rows validated at a time, as the reader does
_COMPACT_ROWS = 1 << 14  # partial per-user sums gathered (at least) before they are folded together
_HASH_CACHE = 1 << 16  # ids whose hash is remembered (a cache, cleared when full: about 8 MiB)


def user_hash(user_id: str) -> int:
    """Return the 64-bit hash that orders users for sampling: the same on every machine and run."""
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass
class Population:
    """Every user with an event at or before the cutoff, as hashes (sorted) with their activity, and the rows."""

    hashes: np.ndarray  # uint64, sorted, unique
    events: np.ndarray  # int64, events at or before the cutoff
    last_seen: np.ndarray  # float64, epoch seconds of the latest of them
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    rejected_summary: str = ""  # RejectWriter.summary of them

    def __len__(self) -> int:
        return int(self.hashes.shape[0])


@dataclass
class Sample:
    """The sampled users' hashes (sorted) and the manifest's record of how they were chosen."""

    hashes: np.ndarray
    record: dict[str, Any]
    warning: str | None = None  # set when the sample is the whole population


class _ChunkReader:
    """Stands in for the reader's Builder: validates each chunk afresh and hands its events to `take`.

    A Builder registers every user it meets; a fresh one per chunk keeps nothing between chunks, so what
    stays in memory is only what `take` keeps.
    """

    def __init__(
        self, rejects: RejectWriter, not_after: float | None, source: str, take: Callable[[EventBatch], None]
    ) -> None:
        self._outer = Builder(rejects, not_after, source=source)  # rows the reader rejects before validation
        self._rejects, self._not_after, self._source, self._take = rejects, not_after, source, take
        self._accepted = 0
        self._rejected = 0

    @property
    def accepted(self) -> int:
        """Return the rows accepted so far."""
        return self._accepted

    @property
    def rejected(self) -> int:
        """Return the rows rejected so far, by the reader or by validation."""
        return self._rejected + self._outer.rejected

    def reject(self, line: int, reason: str, detail: str, fields: Mapping[str, object] | None) -> None:
        """Count a row the reader could not split into fields."""
        self._outer.reject(line, reason, detail, fields)

    def flush(self) -> None:
        """Write the rejects gathered so far."""
        self._outer.flush()

    def add(
        self,
        users: list[str],
        times: list[str],
        types: list[str],
        values: list[object] | None,
        lines: np.ndarray,
        locales: list[str | None] | None = None,
    ) -> None:
        """Validate one chunk of raw fields and hand its accepted events to `take`."""
        chunk = Builder(self._rejects, self._not_after, source=self._source)
        chunk.add(users, times, types, values, lines, locales)
        self._accepted += chunk.accepted
        self._rejected += chunk.rejected
        batch = chunk.batch()
        if len(batch):
            self._take(batch)

    def batch(self) -> EventBatch:
        """Return nothing: the events went to `take`."""
        self.flush()
        return EventBatch.empty()


class _Hasher:
    """Hashes user ids, remembering recent ones (a file meets each user in many chunks)."""

    def __init__(self) -> None:
        self._known: dict[str, int] = {}

    def __call__(self, user_ids: list[str]) -> np.ndarray:
        known = self._known
        found = list(map(known.get, user_ids))
        if None in found:
            if len(known) >= _HASH_CACHE:
                known.clear()
            for i in [i for i, h in enumerate(found) if h is None]:
                found[i] = known[user_ids[i]] = user_hash(user_ids[i])
        return np.array(found, dtype=np.uint64)


class _ActivityCounter:
    """Per-user events and latest time at or before the cutoff, keyed by hash, folded together as rows come."""

    def __init__(self, cutoff: float) -> None:
        self.cutoff = cutoff
        self._hash = _Hasher()
        self._folded = (np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.float64))
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def take(self, batch: EventBatch) -> None:
        """Add one chunk's events at or before the cutoff."""
        before = batch.time <= self.cutoff
        if not before.any():
            return
        index, times = batch.user_index[before], batch.time[before]
        used, local = np.unique(index, return_inverse=True)
        counts = np.bincount(local, minlength=used.shape[0]).astype(np.int64)
        last = np.full(used.shape[0], -np.inf)
        np.maximum.at(last, local, times)
        self._pending.append((self._hash([batch.user_ids[i] for i in used.tolist()]), counts, last))
        self._pending_rows += used.shape[0]
        if self._pending_rows >= max(_COMPACT_ROWS, self._folded[0].shape[0]):
            self._fold()

    def _fold(self) -> None:
        """Fold the pending partial sums into the per-user totals."""
        if not self._pending:
            return
        hashes, counts, last = (np.concatenate(c) for c in zip(self._folded, *self._pending, strict=True))
        self._pending, self._pending_rows = [], 0
        unique, where = np.unique(hashes, return_inverse=True)
        total = np.bincount(where, weights=counts, minlength=unique.shape[0]).astype(np.int64)
        latest = np.full(unique.shape[0], -np.inf)
        np.maximum.at(latest, where, last)
        self._folded = (unique, total, latest)

    def population(self) -> Population:
        """Return the totals of every user met."""
        self._fold()
        return Population(*self._folded)


@contextmanager
def _opened(path: Path, progress: bool, desc: str) -> Iterator[BinaryIO]:
    """Open a file for a streaming pass, with a progress bar over its bytes when asked."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as raw:
            if not progress:
                yield raw
                return
            from tqdm import tqdm

            size = os.fstat(raw.fileno()).st_size
            with tqdm.wrapattr(raw, "read", total=size, desc=desc, file=sys.stderr) as wrapped:
                yield wrapped
    except OSError as exc:  # missing, a directory, no permission, or a disk that fails mid-file
        raise UnreadableFileError(source, f"cannot read: {exc.strerror or exc}") from exc


def _stream(path: Path, reader: _ChunkReader, progress: bool, desc: str) -> None:
    """Feed every row of the file through the reader, as `read_event_file` would, holding nothing."""
    with _opened(path, progress, desc) as stream, _gc_paused():
        _read(stream, os.fspath(path), None, _READ_ROWS, reader, MAX_INFLATED_BYTES)  # type: ignore[arg-type]


def count_population(
    path: Path, cutoff: float, not_after: float | None, *, progress: bool = False, rejects_to: Path | None = None
) -> Population:
    """First pass: return every user with an event at or before the cutoff, their activity, and the row counts;
    the rejected rows, with their reasons, go to `rejects_to` when given and there are any."""
    counter = _ActivityCounter(cutoff)
    with RejectWriter(**({} if rejects_to else {"max_rows": 0})) as rejects:
        reader = _ChunkReader(rejects, not_after, os.fspath(path), counter.take)
        _stream(path, reader, progress, "pass 1 of 2, counting users")
        reader.flush()
        population = counter.population()
        population.rows_accepted, population.rows_rejected = reader.accepted, reader.rejected
        population.rows_read = reader.accepted + reader.rejected
        population.rejected_summary = rejects.summary(written=rejects_to is not None)
        if rejects_to:
            rejects.write_to(rejects_to)
    return population


def strata(population: Population, cutoff: float) -> np.ndarray:
    """Return each user's stratum: events bucket * (len(RECENCY_EDGES_DAYS) + 1) + days-since-last bucket."""
    events_bucket = np.minimum(np.floor(np.log2(np.maximum(population.events, 1))), COUNT_BUCKETS - 1)
    days = (cutoff - population.last_seen) / SECONDS_PER_DAY
    recency_bucket = np.searchsorted(np.asarray(RECENCY_EDGES_DAYS), days, side="left")
    return events_bucket.astype(np.int64) * (len(RECENCY_EDGES_DAYS) + 1) + recency_bucket


def choose_sample(population: Population, requested: int, cutoff: float) -> Sample:
    """Return `requested` users (all, with a warning, when there are fewer), each stratum at the same rate."""
    if requested < 1:
        raise ValueError("requested must be at least 1")
    size = len(population)
    stratum = strata(population, cutoff)
    sizes = np.bincount(stratum, minlength=COUNT_BUCKETS * (len(RECENCY_EDGES_DAYS) + 1))
    warning = None
    if requested >= size:
        quotas = sizes
        warning = (
            f"--sample-users {requested:,} is not fewer than the {size:,} users with an event at or before the "
            "cutoff; training on all of them"
        )
    else:
        quotas = _apportion(sizes, requested)
    # Rank of each user by hash within its stratum (hashes are sorted, so a stable sort by stratum keeps it).
    order = np.argsort(stratum, kind="stable")
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rank = np.empty(size, dtype=np.int64)
    rank[order] = np.arange(size) - starts[stratum[order]]
    chosen = population.hashes[rank < quotas[stratum]]
    return Sample(chosen, _record(population, requested, int(chosen.shape[0]), sizes, quotas), warning)


def _apportion(sizes: np.ndarray, total: int) -> np.ndarray:
    """Return per-stratum counts summing to `total`, each as near size * rate as whole users allow.

    Largest remainder: every stratum gets the floor of its share, and the users left over go to the strata
    with the largest fractions (lowest stratum first on a tie), so no stratum is more than one user off.
    """
    exact = sizes * (total / int(sizes.sum()))
    quotas = np.floor(exact).astype(np.int64)
    left = total - int(quotas.sum())
    if left:
        by_fraction = np.argsort(-(exact - quotas), kind="stable")
        quotas[by_fraction[:left]] += 1
    return quotas


def _record(population: Population, requested: int, used: int, sizes: np.ndarray, quotas: np.ndarray) -> dict:
    """Return the manifest's record of the sample."""
    return {
        "users_requested": requested,
        "users_used": used,
        "population_users": len(population),
        "population": "users with an accepted event at or before the cutoff",
        "log_events": population.rows_accepted,
        "rate": round(used / max(len(population), 1), 6),
        "hash_rule": HASH_RULE,
        "strata_rule": (
            "events at or before the cutoff in powers of two (1, 2-3, ..., 1024+) by days from the latest of them "
            f"to the cutoff (edges {', '.join(f'{d:g}' for d in RECENCY_EDGES_DAYS)}); each stratum sampled at "
            "the same rate, the remainders apportioned by largest fraction"
        ),
        "strata": [
            {
                "events": _events_label(s // (len(RECENCY_EDGES_DAYS) + 1)),
                "days_since_last": _recency_label(s % (len(RECENCY_EDGES_DAYS) + 1)),
                "population": int(sizes[s]),
                "sampled": int(quotas[s]),
                "rate": round(int(quotas[s]) / int(sizes[s]), 6),
            }
            for s in np.flatnonzero(sizes).tolist()
        ],
    }


def _events_label(bucket: int) -> str:
    low = 1 << bucket
    return f"{low}+" if bucket == COUNT_BUCKETS - 1 else (f"{low}" if low == 1 else f"{low}-{2 * low - 1}")


def _recency_label(bucket: int) -> str:
    edges = (0.0, *RECENCY_EDGES_DAYS)
    return f">{edges[-1]:g}" if bucket == len(RECENCY_EDGES_DAYS) else f"{edges[bucket]:g}-{edges[bucket + 1]:g}"


class _SampleCollector:
    """Keeps the events of the sampled users only, numbering those users as they are first met."""

    def __init__(self, chosen: np.ndarray) -> None:
        self._chosen = chosen
        self._hash = _Hasher()
        self.user_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.locales: dict[str, tuple[float, str]] = {}

    def take(self, batch: EventBatch) -> None:
        """Keep the events of this chunk's sampled users."""
        hashes = self._hash(batch.user_ids)
        at = np.minimum(np.searchsorted(self._chosen, hashes), max(self._chosen.shape[0] - 1, 0))
        sampled = self._chosen[at] == hashes if self._chosen.shape[0] else np.zeros(hashes.shape[0], dtype=bool)
        if not sampled.any():
            return
        numbers = np.full(len(batch.user_ids), -1, dtype=np.int32)
        for i in np.flatnonzero(sampled).tolist():
            numbers[i] = self._number(batch.user_ids[i])
        rows = sampled[batch.user_index]
        self._parts.append(
            (numbers[batch.user_index[rows]], batch.time[rows], batch.type_code[rows], batch.value[rows])
        )
        for uid, seen in batch.locales.items():
            if uid in self._index and (uid not in self.locales or seen > self.locales[uid]):
                self.locales[uid] = seen

    def _number(self, user_id: str) -> int:
        number = self._index.get(user_id)
        if number is None:
            number = self._index[user_id] = len(self.user_ids)
            self.user_ids.append(user_id)
        return number

    def events(self) -> EventBatch:
        """Return the kept events as one batch."""
        if not self._parts:
            return EventBatch.empty()
        index, times, codes, values = (np.concatenate(c) for c in zip(*self._parts, strict=True))
        return EventBatch(self.user_ids, index, times, codes, values, locales=self.locales)


def read_sample(path: Path, sample: Sample, not_after: float | None, *, progress: bool = False) -> EventBatch:
    """Second pass: return the events of the sampled users only."""
    collector = _SampleCollector(sample.hashes)
    with RejectWriter(max_rows=0) as rejects:
        reader = _ChunkReader(rejects, not_after, os.fspath(path), collector.take)
        _stream(path, reader, progress, "pass 2 of 2, reading the sample")
    return collector.events()


def sampled_events(
    path: Path,
    requested: int,
    cutoff: float,
    not_after: float | None,
    *,
    progress: bool = False,
    say: Callable[[str], None] = lambda _msg: None,
    rejects_to: Path | None = None,
) -> tuple[EventBatch, Population, Sample]:
    """Return the sampled users' events, the population they came from and the sample's record; the rejected
    rows go to `rejects_to` (count_population)."""
    population = count_population(path, cutoff, not_after, progress=progress, rejects_to=rejects_to)
    say(
        f"{path}: read {population.rows_read} rows, accepted {population.rows_accepted}, rejected "
        f"{population.rows_rejected}; {len(population):,} users with an event at or before the cutoff"
    )
    if population.rows_rejected and rejects_to:
        say(f"{rejects_to}: {population.rejected_summary}")
    if not len(population):
        raise InputError(f"{path}: no events at or before the cutoff {iso_time(cutoff)}; no users to sample")
    sample = choose_sample(population, requested, cutoff)
    if sample.warning:
        say(f"warning: {sample.warning}")
    record = sample.record
    say(
        f"sample: {record['users_used']:,} of {record['population_users']:,} users ({record['rate']:.2%}) over "
        f"{len(record['strata'])} activity strata"
    )
    return read_sample(path, sample, not_after, progress=progress), population, sample
