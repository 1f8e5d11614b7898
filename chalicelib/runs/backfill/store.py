"""A backfill's working objects by name, as JSON or bytes, in the bucket's backfill/<run_id>/ folder."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.runs.ports import Bucket

PLAN = "plan.json"
RANGE_ITEMS = "ranges.json"
SHARD_ITEMS = "shards.json"


def input_part(r: int) -> str:
    """Return the name of a gzip file's range, decompressed by the split."""
    return f"input/range-{r:05d}"


def range_part(r: int, s: int) -> str:
    """Return the name of range `r`'s events of shard `s`."""
    return f"range-{r:05d}/shard-{s:05d}.npz"


def range_rejected(r: int) -> str:
    """Return the name of range `r`'s rejected rows."""
    return f"range-{r:05d}/rejected.csv"


def range_summary(r: int) -> str:
    """Return the name of range `r`'s summary: written last, so it says the range is done."""
    return f"range-{r:05d}/summary.json"


def shard_checkpoint(s: int) -> str:
    """Return the name of shard `s`'s checkpoint."""
    return f"shard-{s:05d}/checkpoint.json"


def shard_summary(s: int) -> str:
    """Return the name of shard `s`'s summary: written last, so it says the shard is done."""
    return f"shard-{s:05d}/summary.json"


def every_name(ranges: int, shards: int, gzipped: bool) -> list[str]:
    """Return the name of every working object a backfill of this shape may have written."""
    names = [PLAN, RANGE_ITEMS, SHARD_ITEMS]
    for r in range(ranges):
        names += [range_rejected(r), range_summary(r), *(range_part(r, s) for s in range(shards))]
        if gzipped:
            names.append(input_part(r))
    for s in range(shards):
        names += [shard_checkpoint(s), shard_summary(s)]
    return names


class WorkingSet:
    """The working objects of one backfill run."""

    def __init__(self, bucket: Bucket, run_id: str) -> None:
        self.bucket = bucket
        self.run_id = run_id

    def put(self, name: str, data: bytes) -> str:
        """Write an object; return its key."""
        return self.bucket.backfill_put(self.run_id, name, data)

    def get(self, name: str) -> bytes | None:
        """Return an object's bytes, or None when it was never written."""
        return self.bucket.backfill_get(self.run_id, name)

    def put_json(self, name: str, value: Any) -> str:
        """Write a JSON object; return its key."""
        return self.put(name, json.dumps(value, default=str).encode())

    def get_json(self, name: str) -> Any | None:
        """Return a JSON object, or None when it was never written."""
        data = self.get(name)
        return None if data is None else json.loads(data)

    def delete(self, names: list[str]) -> None:
        """Delete the named objects."""
        self.bucket.backfill_delete(self.run_id, names)
