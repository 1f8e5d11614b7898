"""Compact per-user behaviour state: bounded size, mergeable in any order, built vectorised.

Each user's history is summarised by a fixed vector of numbers. Every field has a merge rule
that is commutative and associative (sum, min, max, or an exponentially decayed sum), so the
state of a user is the same whether their events arrived in one file or in a thousand files in
any order. Decayed sums are kept referenced to the user's `last_seen` time; moving them to a
later reference multiplies by 2**(-dt / half_life), which is what makes the merge exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY, TYPE_CODE, EventBatch

HALF_LIVES_DAYS: tuple[float, ...] = (7.0, 30.0, 120.0)
# Event types whose `value` is accumulated, and what the value means for them.
VALUE_TYPES: tuple[str, ...] = ("purchase", "refund", "session")

SUM, MIN, MAX, DECAY = "sum", "min", "max", "decay"


def _layout() -> tuple[list[str], list[str], list[float]]:
    names: list[str] = ["first_seen", "last_seen", "first_purchase"]
    rules: list[str] = [MIN, MAX, MIN]
    half_lives: list[float] = [0.0, 0.0, 0.0]
    for name in EVENT_TYPES:
        names += [f"count_{name}", f"last_{name}"]
        rules += [SUM, MAX]
        half_lives += [0.0, 0.0]
    for name in VALUE_TYPES:
        names.append(f"value_{name}")
        rules.append(SUM)
        half_lives.append(0.0)
    for hl in HALF_LIVES_DAYS:
        for name in EVENT_TYPES:
            names.append(f"decay_{name}_{hl:g}d")
            rules.append(DECAY)
            half_lives.append(hl)
        for name in VALUE_TYPES:
            names.append(f"decay_value_{name}_{hl:g}d")
            rules.append(DECAY)
            half_lives.append(hl)
    return names, rules, half_lives


FIELDS, _RULES, _HALF_LIVES = _layout()
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(FIELDS)}
N_FIELDS = len(FIELDS)
# Identifies the layout in stored items, so a state written by another layout is never misread.
LAYOUT_ID = "v1-" + hashlib.sha256(",".join(FIELDS).encode()).hexdigest()[:12]

_RULE = np.array(_RULES)
_SUM_COLS = np.flatnonzero(_RULE == SUM)
_MIN_COLS = np.flatnonzero(_RULE == MIN)
_MAX_COLS = np.flatnonzero(_RULE == MAX)
_DECAY_COLS = np.flatnonzero(_RULE == DECAY)
# Decay rate per decayed column, in 1/seconds (ln 2 / half-life).
_DECAY_RATE = np.log(2.0) / (np.array(_HALF_LIVES)[_DECAY_COLS] * SECONDS_PER_DAY)

_IDENTITY = np.zeros(N_FIELDS)
_IDENTITY[_MIN_COLS] = np.inf
_IDENTITY[_MAX_COLS] = -np.inf
_LAST_SEEN = FIELD_INDEX["last_seen"]


def col(name: str) -> int:
    """Return the column index of a state field."""
    return FIELD_INDEX[name]


def empty_rows(n: int) -> np.ndarray:
    """Return `n` state rows of a user with no events (the identity of the merge)."""
    return np.tile(_IDENTITY, (n, 1))


@dataclass
class StateBatch:
    """Behaviour state of several users: one row of `values` per entry of `user_ids`."""

    user_ids: list[str]
    values: np.ndarray  # float64 [len(user_ids), N_FIELDS]

    def __len__(self) -> int:
        return len(self.user_ids)

    def blob(self, row: int) -> bytes:
        """Return one user's state as bytes (little-endian float64), exact and compact."""
        return self.values[row].astype("<f8").tobytes()

    @classmethod
    def from_blobs(cls, user_ids: list[str], blobs: list[bytes]) -> StateBatch:
        """Rebuild a batch from stored blobs (see `blob`)."""
        if not blobs:
            return cls(user_ids=[], values=empty_rows(0))
        values = np.frombuffer(b"".join(blobs), dtype="<f8").reshape(len(blobs), N_FIELDS)
        return cls(user_ids=list(user_ids), values=values.astype(np.float64))

    def subset(self, user_ids: list[str]) -> StateBatch:
        """Return the rows of the given users, identity rows for users not in this batch."""
        index = {uid: i for i, uid in enumerate(self.user_ids)}
        out = empty_rows(len(user_ids))
        pos = [(j, index[uid]) for j, uid in enumerate(user_ids) if uid in index]
        if pos:
            dst, src = map(list, zip(*pos))
            out[dst] = self.values[src]
        return StateBatch(user_ids=list(user_ids), values=out)


def build_state(events: EventBatch) -> StateBatch:
    """Summarise a batch of events into one state row per user, vectorised."""
    n_users = len(events.user_ids)
    values = empty_rows(n_users)
    if len(events) == 0:
        return StateBatch(user_ids=list(events.user_ids), values=values)
    users = events.user_index.astype(np.int64)
    times = events.time
    types = events.type_code.astype(np.int64)
    n_types = len(EVENT_TYPES)

    first = np.full(n_users, np.inf)
    last = np.full(n_users, -np.inf)
    np.minimum.at(first, users, times)
    np.maximum.at(last, users, times)
    values[:, col("first_seen")] = first
    values[:, col("last_seen")] = last

    is_purchase = types == TYPE_CODE["purchase"]
    first_purchase = np.full(n_users, np.inf)
    np.minimum.at(first_purchase, users[is_purchase], times[is_purchase])
    values[:, col("first_purchase")] = first_purchase

    cell = users * n_types + types
    counts = np.bincount(cell, minlength=n_users * n_types).reshape(n_users, n_types)
    last_by_type = np.full(n_users * n_types, -np.inf)
    np.maximum.at(last_by_type, cell, times)
    last_by_type = last_by_type.reshape(n_users, n_types)
    for code, name in enumerate(EVENT_TYPES):
        values[:, col(f"count_{name}")] = counts[:, code]
        values[:, col(f"last_{name}")] = last_by_type[:, code]

    age = last[users] - times  # >= 0: seconds before the user's reference time
    # Valued events (purchases, refunds, sessions) are a minority: gather them once, not per half-life.
    valued = {}
    for name in VALUE_TYPES:
        idx = np.flatnonzero((types == TYPE_CODE[name]) & ~np.isnan(events.value))
        valued[name] = (users[idx], events.value[idx], age[idx])
        values[:, col(f"value_{name}")] = np.bincount(users[idx], weights=events.value[idx], minlength=n_users)

    for hl in HALF_LIVES_DAYS:
        scale = -1.0 / (hl * SECONDS_PER_DAY)
        decayed = np.bincount(cell, weights=np.exp2(age * scale), minlength=n_users * n_types)
        decayed = decayed.reshape(n_users, n_types)
        for code, name in enumerate(EVENT_TYPES):
            values[:, col(f"decay_{name}_{hl:g}d")] = decayed[:, code]
        for name, (v_users, v_value, v_age) in valued.items():
            values[:, col(f"decay_value_{name}_{hl:g}d")] = np.bincount(
                v_users, weights=v_value * np.exp2(v_age * scale), minlength=n_users
            )
    return StateBatch(user_ids=list(events.user_ids), values=values)


def merge_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge two aligned arrays of state rows (same users, same order); order-independent."""
    out = np.empty_like(a)
    out[:, _SUM_COLS] = a[:, _SUM_COLS] + b[:, _SUM_COLS]
    out[:, _MIN_COLS] = np.minimum(a[:, _MIN_COLS], b[:, _MIN_COLS])
    out[:, _MAX_COLS] = np.maximum(a[:, _MAX_COLS], b[:, _MAX_COLS])
    ref = out[:, _LAST_SEEN]
    out[:, _DECAY_COLS] = _rebase(a, ref) + _rebase(b, ref)
    return out


def _rebase(rows: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Return the decayed sums of `rows` moved to reference time `ref` (never forward in time)."""
    own = rows[:, _LAST_SEEN]
    has_events = np.isfinite(own)
    dt = np.where(has_events, np.maximum(ref - np.where(has_events, own, 0.0), 0.0), 0.0)
    factor = np.exp(-np.outer(dt, _DECAY_RATE))
    return np.where(has_events[:, None], rows[:, _DECAY_COLS] * factor, 0.0)


def merge_states(base: StateBatch, delta: StateBatch) -> StateBatch:
    """Return the union of two batches; users in both get their rows merged."""
    user_ids = list(dict.fromkeys([*base.user_ids, *delta.user_ids]))
    merged = merge_rows(base.subset(user_ids).values, delta.subset(user_ids).values)
    return StateBatch(user_ids=user_ids, values=merged)


def decayed_at(values: np.ndarray, name: str, as_of: float | np.ndarray) -> np.ndarray:
    """Return a decayed field (e.g. 'decay_login_7d') evaluated at time `as_of`."""
    i = col(name)
    hl = _HALF_LIVES[i]
    last = values[:, _LAST_SEEN]
    dt = np.where(np.isfinite(last), np.maximum(as_of - np.where(np.isfinite(last), last, 0.0), 0.0), 0.0)
    return values[:, i] * np.exp2(-dt / (hl * SECONDS_PER_DAY))
