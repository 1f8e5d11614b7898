"""A range's events by shard, in a compact form: numpy columns and the users' ids, one .npz per (range, shard)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping

import numpy as np

from chalicelib.ingest.rejects import RejectWriter
from chalicelib.scoring.events import EventBatch


def shard_of(user_id: str, shards: int) -> int:
    """Return the shard a user belongs to: a stable hash of the id (the same in every range and every run)."""
    digest = hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def by_shard(events: EventBatch, shards: int) -> list[EventBatch]:
    """Return the events of each shard, in file order, each user in exactly one."""
    user_shard = np.array([shard_of(uid, shards) for uid in events.user_ids], dtype=np.int64)
    event_shard = user_shard[events.user_index] if len(events) else np.zeros(0, dtype=np.int64)
    # One stable sort instead of a pass over every event per shard: each shard's events stay in file order.
    order = np.argsort(event_shard, kind="stable")
    bounds = np.searchsorted(event_shard[order], np.arange(shards + 1))
    # Indexed by the (ascending) positions of each shard's events: `select` takes them as it takes a mask.
    return [events.select(order[bounds[s] : bounds[s + 1]]) for s in range(shards)]


def encode(events: EventBatch) -> bytes:
    """Return a batch of events as numpy columns (no pickle: ids and locales are JSON); zlib cost more than it saved."""
    out = io.BytesIO()
    meta = json.dumps({"user_ids": events.user_ids, "locales": events.locales}).encode()
    np.savez(
        out,
        user_index=events.user_index.astype(np.int32),
        time=events.time.astype(np.float64),
        type_code=events.type_code.astype(np.int8),
        value=events.value.astype(np.float64),
        meta=np.frombuffer(meta, dtype=np.uint8),
    )
    return out.getvalue()


def decode(data: bytes) -> EventBatch:
    """Return the batch of events `encode` wrote."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes())
        return EventBatch(
            user_ids=meta["user_ids"],
            user_index=npz["user_index"],
            time=npz["time"],
            type_code=npz["type_code"],
            value=npz["value"],
            locales={uid: (float(t), loc) for uid, (t, loc) in meta["locales"].items()},
        )


def concat(parts: list[EventBatch]) -> EventBatch:
    """Return the events of several parts in order, users numbered by first appearance."""
    ids: dict[str, int] = {}
    index, locales = [], {}
    for part in parts:
        codes = np.array([ids.setdefault(uid, len(ids)) for uid in part.user_ids], dtype=np.int32)
        index.append(codes[part.user_index] if len(part) else np.zeros(0, dtype=np.int32))
        for uid, loc in part.locales.items():
            if uid not in locales or tuple(loc) > tuple(locales[uid]):  # the latest row wins, as in one read
                locales[uid] = tuple(loc)
    if not parts:
        return EventBatch.empty()
    return EventBatch(
        user_ids=list(ids),
        user_index=np.concatenate(index).astype(np.int32),
        time=np.concatenate([p.time for p in parts]),
        type_code=np.concatenate([p.type_code for p in parts]),
        value=np.concatenate([p.value for p in parts]),
        locales=locales,
    )


class OffsetRejects(RejectWriter):
    """A reject writer that numbers a range's rows as the lines of the whole file."""

    def __init__(self, offset: int, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.offset = offset

    def add(self, line: int, reason: str, detail: str, fields: Mapping[str, object] | None) -> None:
        """Record one rejected row under its line in the whole file."""
        super().add(line + self.offset, reason, detail, fields)
