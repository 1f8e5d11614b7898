"""Synthetic behaviour event logs with realistic personas whose churn follows from visible behaviour."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from chalicelib.errors import InputError
from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY, TYPE_CODE, EventBatch

KINDS: tuple[str, ...] = ("multi", "purchases")
PERSONAS: tuple[str, ...] = (
    "loyal",
    "declining",
    "abrupt",
    "new",
    "seasonal",
    "price_sensitive",
    "complaining",
)
PERSONA_SHARES: tuple[float, ...] = (0.30, 0.14, 0.10, 0.18, 0.10, 0.10, 0.08)
LOYAL, DECLINING, ABRUPT, NEW, SEASONAL, PRICE_SENSITIVE, COMPLAINING = range(len(PERSONAS))

# Chunk size is part of the random stream layout: changing it changes every generated file.
CHUNK_USERS = 10_000
_DAY = int(SECONDS_PER_DAY)

# Ordinary activity types; the signal types (complaints, tickets, coupons, refunds, unsubscribes)
# come from their own processes because they carry the churn precursors.
_ACTIVITY_TYPES = ("login", "session", "purchase", "feature_use", "social_interaction", "content_view")
_ACTIVITY_CODES = np.array([TYPE_CODE[name] for name in _ACTIVITY_TYPES], dtype=np.int8)
_PURCHASE_SLOT = _ACTIVITY_TYPES.index("purchase")
_MIX_DEFAULT = np.array([0.28, 0.24, 0.12, 0.10, 0.10, 0.16])
_MIX_BUYERS = np.array([0.24, 0.20, 0.25, 0.08, 0.08, 0.15])
_MIX_CONCENTRATION = 15.0

# Relative activity by UTC hour: quiet nights, a lunch bump and an evening peak.
_HOURLY = np.concatenate(
    [
        [1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.5, 2.6, 2.8],  # 00-11h
        [3.2, 3.0, 2.7, 2.6, 2.8, 3.2, 3.8, 4.4, 4.6, 4.2, 3.2, 2.0],  # 12-23h
    ]
)
_HOURLY_CDF = np.cumsum(_HOURLY) / _HOURLY.sum()

# Tuned so "multi" averages ~10 events per user per 90 days and a 30-day churn label is 20-35%.
_LEVEL_MEDIAN = {"multi": 0.09, "purchases": 0.075}
# Order exports are a little less heterogeneous than raw activity (no ultra-active browsers).
_LEVEL_SIGMA = {"multi": 1.0, "purchases": 0.85}
_PERSONA_LEVEL = np.array([1.15, 1.0, 1.0, 0.9, 0.8, 0.9, 1.0])
_BASE_HAZARD = 0.0003
# Days, from the window start, over which declines and bad experiences begin: most at-risk users
# are still fine in a one-year window, as in a real customer base.
_ONSET_SPAN = (-60.0, 1080.0)
_BASE_COMPLAINT_RATE = 0.0008
_BASE_TICKET_RATE = 0.0015
_UNSUBSCRIBE_SHARE = 0.35
_ABSENCE_SHARE = 0.3


@dataclass
class SyntheticPopulation:
    """Generated events together with the ground truth behind them (persona, join and churn times)."""

    batch: EventBatch
    persona: np.ndarray  # int8 per user, index into PERSONAS
    join_time: np.ndarray  # float64 epoch seconds; the window start for users who predate it
    churn_time: np.ndarray  # float64 epoch seconds; NaN for users who never churned inside the window


def user_id_for(index: int, n_users: int) -> str:
    """Return the id of the user at `index` (0-based), zero-padded to the width of the user count."""
    return f"u{index + 1:0{len(str(n_users))}d}"


def generate_events(
    n_users: int,
    days: int,
    seed: int,
    as_of: datetime,
    *,
    kind: str = "multi",
    progress: bool = False,
) -> EventBatch:
    """Return a synthetic event log over (as_of - days, as_of], sorted by time, for users with events."""
    population = simulate_population(n_users, days, seed, as_of, kind=kind, progress=progress)
    batch = population.batch
    if np.bincount(batch.user_index, minlength=len(batch.user_ids)).all():
        return batch
    return batch.select(np.ones(len(batch), dtype=bool))


def simulate_population(
    n_users: int,
    days: int,
    seed: int,
    as_of: datetime,
    *,
    kind: str = "multi",
    progress: bool = False,
) -> SyntheticPopulation:
    """Return events for all `n_users` (some may have none) plus each user's persona and churn time."""
    _check_population(n_users, days, kind)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    end = math.floor(as_of.timestamp())
    start = end - days * _DAY

    rng = np.random.default_rng(seed)
    promo = _promotion_calendar(rng, days)
    dow = ((start + np.arange(days) * _DAY + _DAY // 2) // _DAY + 3) % 7  # 1970-01-01 was a Thursday

    chunks = range(0, n_users, CHUNK_USERS)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, total=len(chunks), unit="chunk", desc="generating", file=sys.stderr)

    parts = []
    for first in chunks:
        size = min(CHUNK_USERS, n_users - first)
        parts.append(_simulate_chunk(rng, size, days, start, promo, dow, kind, first))

    users, times, codes, values, persona, join_time, churn_time = _join_chunks(parts)
    order = np.lexsort((codes, users, times))
    batch = EventBatch(
        user_ids=[user_id_for(i, n_users) for i in range(n_users)],
        user_index=users[order],
        time=times[order],
        type_code=codes[order],
        value=values[order],
    )
    return SyntheticPopulation(batch=batch, persona=persona, join_time=join_time, churn_time=churn_time)


def _check_population(n_users: int, days: int, kind: str) -> None:
    """Raise InputError for a population that cannot be simulated."""
    if n_users < 0:
        raise InputError(f"number of users must not be negative, got {n_users}")
    if days < 1:
        raise InputError(f"days must be at least 1, got {days}")
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


# A simulated chunk's columns, in the order _join_chunks returns them: events first, then per-user facts.
_CHUNK_COLUMNS = ("user", "time", "code", "value", "persona", "join_time", "churn_time")
_CHUNK_DTYPES = (np.int32, np.float64, np.int8, np.float64, np.int8, np.float64, np.float64)


def _join_chunks(parts: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """Return each column of `_CHUNK_COLUMNS` over all simulated chunks (empty, typed arrays when there are none)."""
    if not parts:
        return tuple(np.zeros(0, dtype=dtype) for dtype in _CHUNK_DTYPES)
    return tuple(np.concatenate([p[column] for p in parts]) for column in _CHUNK_COLUMNS)


def _promotion_calendar(rng: np.random.Generator, days: int) -> np.ndarray:
    """Return a per-day promotion intensity (0..1): a few shared sale weeks every two to three months."""
    promo = np.zeros(days)
    day = float(rng.uniform(10, 60))
    while day < days:
        length = int(rng.integers(6, 11))
        first = int(day)
        promo[first : first + length] = rng.uniform(0.7, 1.0)
        day += rng.uniform(55, 100)
    return promo


@dataclass
class _Latent:
    """The hidden day-by-day state of a chunk of users, from which both events and churn are drawn."""

    engagement: np.ndarray  # users x days multiplier on ordinary activity
    hazard: np.ndarray  # users x days probability-rate of leaving for good
    complaints: np.ndarray  # users x days complaint rate
    tickets: np.ndarray  # users x days support-ticket rate
    join_day: np.ndarray  # per user; 0 for users who predate the window
    difficulty: np.ndarray  # per user onboarding difficulty (new users only, else 0)
    coupon_rate: np.ndarray  # per user share of purchases made with a coupon while deals last
    coupon_stop: np.ndarray  # per user day the personal deals stop (inf = never)


def _latent_state(
    rng: np.random.Generator, persona: np.ndarray, hazard0: np.ndarray, days: int, promo: np.ndarray
) -> _Latent:
    """Return each user's hidden trajectory according to their persona."""
    n = persona.size
    d = np.arange(days, dtype=np.float64)[None, :]
    state = _Latent(
        engagement=np.ones((n, days)),
        hazard=np.repeat(hazard0[:, None], days, axis=1),
        complaints=np.full((n, days), _BASE_COMPLAINT_RATE),
        tickets=np.full((n, days), _BASE_TICKET_RATE),
        join_day=np.zeros(n),
        difficulty=np.zeros(n),
        coupon_rate=np.full(n, 0.06),
        coupon_stop=np.full(n, np.inf),
    )

    rows = np.flatnonzero(persona == DECLINING)
    if rows.size:
        # Engagement decays over weeks; some settle on a low plateau instead of leaving soon.
        onset = rng.uniform(*_ONSET_SPAN, rows.size)[:, None]
        tau = rng.uniform(14, 50, rows.size)[:, None]
        floor = np.where(rng.random(rows.size) < 0.3, rng.uniform(0.2, 0.5, rows.size), 0.0)[:, None]
        eng = floor + (1 - floor) * np.exp(-np.clip(d - onset, 0, None) / tau)
        state.engagement[rows] = eng
        state.hazard[rows] += 0.045 * (1 - eng) ** 2
        state.complaints[rows] += 0.03 * (1 - eng)
        state.tickets[rows] += 0.01 * (1 - eng)

    rows = np.flatnonzero(persona == ABRUPT)
    if rows.size:
        # A bad experience: usually a burst of complaints/tickets, then most leave within days.
        trigger = rng.uniform(*_ONSET_SPAN, rows.size)[:, None]
        burst = rng.uniform(3, 12, rows.size)[:, None]
        visible = (rng.random(rows.size) < 0.7)[:, None]
        leaves = (rng.random(rows.size) < 0.8)[:, None]
        in_burst = (d >= trigger) & (d < trigger + burst) & visible
        after = d >= trigger
        state.complaints[rows] += 0.25 * in_burst
        state.tickets[rows] += 0.3 * in_burst
        state.engagement[rows] = np.where(after, 0.8, 1.0)
        state.hazard[rows] += 0.12 * (after & leaves)

    rows = np.flatnonzero(persona == NEW)
    if rows.size:
        # Users who struggle with the product file tickets, explore few features and leave early.
        state.join_day[rows] = rng.integers(0, days, rows.size)
        state.difficulty[rows] = rng.beta(2.0, 3.0, rows.size)
        age = np.clip(d - state.join_day[rows][:, None], 0, None)
        q = state.difficulty[rows][:, None]
        fading = np.exp(-age / 20)
        state.engagement[rows] = 1 - 0.5 * q * (1 - fading)
        state.tickets[rows] += 0.25 * q**2 * fading
        state.hazard[rows] += 0.09 * q**3 * np.exp(-age / 25) + 0.002 * q

    rows = np.flatnonzero(persona == SEASONAL)
    if rows.size:
        # Mostly quiet, very active in the shared sale weeks: long silences that end.
        state.engagement[rows] = 0.5 + 3.0 * promo[None, :]
        state.coupon_rate[rows] = 0.15

    rows = np.flatnonzero(persona == PRICE_SENSITIVE)
    if rows.size:
        # They buy with coupons; once the personal deals stop, activity fades and they leave.
        stop = rng.uniform(*_ONSET_SPAN, rows.size)
        tau = rng.uniform(10, 40, rows.size)[:, None]
        eng = 0.35 + 0.65 * np.exp(-np.clip(d - stop[:, None], 0, None) / tau)
        state.engagement[rows] = eng
        state.hazard[rows] += 0.035 * (1 - eng)
        state.complaints[rows] += 0.01 * (1 - eng)
        state.coupon_rate[rows] = rng.uniform(0.55, 0.9, rows.size)
        state.coupon_stop[rows] = stop

    rows = np.flatnonzero(persona == COMPLAINING)
    if rows.size:
        # Complaints build up over one to three months and drag engagement down with them.
        onset = rng.uniform(*_ONSET_SPAN, rows.size)[:, None]
        ramp = np.clip((d - onset) / rng.uniform(30, 90, rows.size)[:, None], 0, 1.5)
        state.complaints[rows] += 0.12 * ramp
        state.tickets[rows] += 0.04 * ramp
        state.engagement[rows] = 1 - 0.35 * np.clip(ramp, 0, 1)
        state.hazard[rows] += 0.035 * ramp**2

    state.hazard *= d >= state.join_day[:, None]
    return state


def _simulate_chunk(
    rng: np.random.Generator,
    n: int,
    days: int,
    start: int,
    promo: np.ndarray,
    dow: np.ndarray,
    kind: str,
    first_user: int,
) -> dict[str, np.ndarray]:
    """Simulate `n` users over the window and return their events plus ground truth, as columns."""
    d = np.arange(days, dtype=np.float64)[None, :]
    end = start + days * _DAY
    persona = rng.choice(len(PERSONAS), size=n, p=np.asarray(PERSONA_SHARES)).astype(np.int8)

    # Heterogeneity every persona shares: activity level, spend, weekly and daily rhythm.
    level = _LEVEL_MEDIAN[kind] * rng.lognormal(0.0, _LEVEL_SIGMA[kind], n) * _PERSONA_LEVEL[persona]
    spend = rng.lognormal(math.log(35.0), 0.6, n) * np.where(persona == PRICE_SENSITIVE, 0.6, 1.0)
    session_minutes = rng.lognormal(math.log(14.0), 0.5, n)
    weekend = rng.lognormal(0.0, 0.35, n)
    tz_shift = rng.normal(0.0, 2.5 * 3600, n)
    weekly = np.ones((n, 7))
    weekly[:, 4] = 1.1
    weekly[:, 5:] = weekend[:, None]
    weekly /= weekly.mean(axis=1, keepdims=True)
    week_noise = rng.lognormal(-0.045, 0.3, (n, (days + 6) // 7))
    buyer = (persona == PRICE_SENSITIVE) | (persona == SEASONAL)
    mix = np.empty((n, len(_ACTIVITY_TYPES)))
    for rows, mean in ((~buyer, _MIX_DEFAULT), (buyer, _MIX_BUYERS)):
        mix[rows] = rng.dirichlet(mean * _MIX_CONCENTRATION, int(rows.sum()))
    # Less active users are a little more likely to leave, so the level itself carries signal.
    hazard0 = _BASE_HAZARD * (level / _LEVEL_MEDIAN[kind]) ** -0.4 * rng.lognormal(0.0, 0.4, n)
    state = _latent_state(rng, persona, hazard0, days, promo)

    # Some people go quiet for a few weeks (travel, exams) and come back.
    away = rng.random(n) < _ABSENCE_SHARE
    away_start = rng.uniform(-20, days, n)[:, None]
    away_end = away_start + rng.uniform(30, 90, n)[:, None]
    absent = away[:, None] & (d >= away_start) & (d < away_end) & (persona != NEW)[:, None]

    # Leaving is a hazard process over the latent state: the user is gone once the cumulative
    # hazard passes an exponential threshold, so visible decline precedes most departures.
    cumulative = np.cumsum(state.hazard, axis=1)
    threshold = rng.exponential(1.0, n)
    churned = cumulative[:, -1] > threshold
    churn_day = np.where(churned, np.argmax(cumulative > threshold[:, None], axis=1), days)
    churn_at = start + churn_day.astype(np.int64) * _DAY + rng.integers(1, _DAY, n)
    active = (d >= state.join_day[:, None]) & (d < churn_day[:, None]) & ~absent

    week = np.arange(days) // 7
    activity = (
        level[:, None] * weekly[:, dow] * week_noise[:, week] * state.engagement * (1 + 0.2 * promo[None, :]) * active
    )

    day_start = start + np.arange(days, dtype=np.int64) * _DAY
    user, day = _expand(rng, activity)
    time = _times(rng, day_start[day], tz_shift[user])
    n_act = user.size
    if kind == "purchases":
        slot = np.full(n_act, _PURCHASE_SLOT)
    else:
        cum_mix = np.cumsum(mix, axis=1)
        slot = np.minimum((rng.random(n_act)[:, None] > cum_mix[user]).sum(axis=1), len(_ACTIVITY_TYPES) - 1)
        # New users who find their way around use many features in their first weeks.
        age = day - state.join_day[user]
        explores = rng.random(n_act) < 0.5 * (1 - state.difficulty[user]) * np.exp(-age / 30)
        slot = np.where(explores & (persona[user] == NEW), _ACTIVITY_TYPES.index("feature_use"), slot)
    code = _ACTIVITY_CODES[slot]
    value = np.full(n_act, np.nan)

    # Disengaging users keep shorter sessions and smaller baskets.
    eng_at = np.minimum(state.engagement[user, day], 1.0)
    is_session = code == TYPE_CODE["session"]
    minutes = session_minutes[user] * (0.4 + 0.6 * eng_at) * rng.lognormal(0, 0.5, n_act)
    value[is_session] = np.round(minutes[is_session], 1)

    is_purchase = code == TYPE_CODE["purchase"]
    p_coupon = np.where(day < state.coupon_stop[user], state.coupon_rate[user], 0.05) + 0.15 * promo[day]
    coupon = is_purchase & (rng.random(n_act) < p_coupon)
    amount = spend[user] * (0.5 + 0.5 * eng_at) * rng.lognormal(0, 0.35, n_act)
    amount *= np.where(coupon, rng.uniform(0.6, 0.85, n_act), 1.0)
    value[is_purchase] = np.maximum(np.round(amount[is_purchase], 2), 0.5)

    out = _Columns()
    out.add(user, time, code, value)
    if kind == "multi":
        # Complaints and support tickets, at rates driven by the same latent state as leaving.
        signal_rate = (state.complaints + state.tickets) * active
        s_user, s_day = _expand(rng, signal_rate)
        complaint_rate = state.complaints[s_user, s_day]
        p_complaint = complaint_rate / (complaint_rate + state.tickets[s_user, s_day])
        s_code = np.where(rng.random(s_user.size) < p_complaint, TYPE_CODE["complaint"], TYPE_CODE["support_ticket"])
        out.add(s_user, _times(rng, day_start[s_day], tz_shift[s_user]), s_code)

        # A coupon is redeemed moments before the purchase it discounts.
        redeemed = time[coupon] - rng.integers(5, 300, int(coupon.sum()))
        out.add(user[coupon], np.maximum(redeemed, day_start[day[coupon]] + 1), TYPE_CODE["coupon_redeem"])

        # Refunds follow purchases more often when the user is unhappy, and never after they left.
        refund = is_purchase & (rng.random(n_act) < 0.03 + 0.5 * state.complaints[user, day])
        refund_time = time[refund] + rng.integers(_DAY, 10 * _DAY, int(refund.sum()))
        keep = refund_time <= np.where(churned, churn_at, end)[user[refund]]
        out.add(user[refund][keep], refund_time[keep], TYPE_CODE["refund"], value[refund][keep])

        says_bye = np.flatnonzero(churned & (rng.random(n) < _UNSUBSCRIBE_SHARE))
        out.add(says_bye, churn_at[says_bye], TYPE_CODE["unsubscribe"])

    users, times, codes, values = out.arrays()
    return {
        "user": users + first_user,
        "time": times,
        "code": codes,
        "value": values,
        "persona": persona,
        "join_time": (start + state.join_day * _DAY).astype(np.float64),
        "churn_time": np.where(churned, churn_at, np.nan).astype(np.float64),
    }


class _Columns:
    """Accumulates event columns from several sources and concatenates them once."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, user: np.ndarray, time: np.ndarray, code: np.ndarray | int, value: np.ndarray | None = None):
        """Add events; a scalar code applies to all of them, a missing value means none."""
        n = user.size
        self._parts.append(
            (
                user.astype(np.int32),
                np.asarray(time, dtype=np.float64),
                np.broadcast_to(np.asarray(code, dtype=np.int8), (n,)),
                np.full(n, np.nan) if value is None else value,
            )
        )

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return (user, time, code, value) over everything added."""
        return tuple(np.concatenate(column) for column in zip(*self._parts, strict=True))


def _expand(rng: np.random.Generator, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw Poisson counts from a users x days rate matrix; return (user, day) per event."""
    counts = rng.poisson(rate)
    user, day = np.nonzero(counts)
    repeats = counts[user, day]
    return np.repeat(user, repeats), np.repeat(day, repeats)


def _times(rng: np.random.Generator, slot_start: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Return whole-second event times in (slot_start, slot_start + 1 day] with a realistic hour of day."""
    hour = np.searchsorted(_HOURLY_CDF, rng.random(slot_start.size), side="right")
    second_of_day = (hour * 3600 + rng.integers(0, 3600, slot_start.size) + shift.astype(np.int64)) % _DAY
    candidate = slot_start - slot_start % _DAY + second_of_day
    return np.where(candidate <= slot_start, candidate + _DAY, candidate)


def write_event_log(batch: EventBatch, path: str | os.PathLike, *, progress: bool = False) -> int:
    """Write the batch as CSV or JSON Lines (by extension, gzip for .gz) sorted by time; return rows written."""
    name = os.fspath(path).lower()
    plain = name[:-3] if name.endswith(".gz") else name
    as_json = plain.endswith((".jsonl", ".ndjson"))
    order = np.argsort(batch.time, kind="stable")
    rows = len(order)
    raw = gzip.open(path, "wb", compresslevel=6) if name.endswith(".gz") else open(path, "wb")  # noqa: SIM115
    with raw, io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as out:
        if not as_json:
            out.write("user_id,event_time,event_type,value\n")
        for lines in _formatted_chunks(batch, order, as_json, progress):
            out.write(lines)
    return rows


def _formatted_chunks(batch: EventBatch, order: np.ndarray, as_json: bool, progress: bool) -> Iterator[str]:
    """Yield the rows in `order` as text, a chunk at a time, with every column formatted vectorised."""
    # Ids are quoted once per user, not per row; generated ids never need it but read ones may.
    user_ids = np.asarray([_quoted(u, as_json) for u in batch.user_ids], dtype=object)
    type_names = np.asarray(EVENT_TYPES, dtype=object)
    step = 200_000
    starts = range(0, len(order), step)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, total=len(starts), unit="chunk", desc="writing", file=sys.stderr)
    for first in starts:
        idx = order[first : first + step]
        users = user_ids[batch.user_index[idx]].tolist()
        stamps = np.datetime_as_string(batch.time[idx].astype("datetime64[s]"), unit="s", timezone="UTC").tolist()
        types = type_names[batch.type_code[idx]].tolist()
        values = [
            "" if v != v else format(v, ".15g")  # v != v is the NaN test
            for v in np.round(batch.value[idx], 2).tolist()
        ]
        if as_json:
            yield "".join(
                f'{{"user_id":{u},"event_time":"{t}","event_type":"{e}"' + (f',"value":{v}}}\n' if v else "}\n")
                for u, t, e, v in zip(users, stamps, types, values, strict=True)
            )
        else:
            yield "".join(f"{u},{t},{e},{v}\n" for u, t, e, v in zip(users, stamps, types, values, strict=True))


def _quoted(user_id: str, as_json: bool) -> str:
    """Return the user id as a JSON string literal, or as a CSV field quoted only when it has to be."""
    if as_json:
        return json.dumps(user_id)
    if any(ch in user_id for ch in ',"\r\n'):
        return '"' + user_id.replace('"', '""') + '"'
    return user_id
