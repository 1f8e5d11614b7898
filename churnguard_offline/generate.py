"""Synthetic behaviour event logs with realistic personas whose churn follows from visible behaviour."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from chalicelib.errors import InputError
from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY, TYPE_CODE, EventBatch

KINDS: tuple[str, ...] = ("multi", "purchases", "pareto_nbd")
# The kinds drawn from personas here; "pareto_nbd" is a buy-till-you-die process (churnguard_offline.btyd_logs).
PERSONA_KINDS: tuple[str, ...] = ("multi", "purchases")
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
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "pareto_nbd":
        from churnguard_offline.btyd_logs import simulate_pareto_nbd

        return simulate_pareto_nbd(n_users, days, seed, as_of, progress=progress)[0]
    return users_with_events(simulate_population(n_users, days, seed, as_of, kind=kind, progress=progress).batch)


def users_with_events(batch: EventBatch) -> EventBatch:
    """Return a simulated population's events as a log holds them: only the users who have any."""
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
    if kind not in PERSONA_KINDS:
        raise InputError(f"unknown kind {kind!r}; expected one of {', '.join(PERSONA_KINDS)}")


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
    d = np.arange(days, dtype=np.float64)[None, :]
    state = _steady_state(hazard0, days)
    for code, shape in _PERSONA_TRAJECTORIES:
        rows = np.flatnonzero(persona == code)
        if rows.size:
            shape(rng, state, rows, d, promo)
    state.hazard *= d >= state.join_day[:, None]
    return state


def _steady_state(hazard0: np.ndarray, days: int) -> _Latent:
    """Return the state of users who stay as they are: full engagement, base rates, no personal deals."""
    n = hazard0.size
    return _Latent(
        engagement=np.ones((n, days)),
        hazard=np.repeat(hazard0[:, None], days, axis=1),
        complaints=np.full((n, days), _BASE_COMPLAINT_RATE),
        tickets=np.full((n, days), _BASE_TICKET_RATE),
        join_day=np.zeros(n),
        difficulty=np.zeros(n),
        coupon_rate=np.full(n, 0.06),
        coupon_stop=np.full(n, np.inf),
    )


def _declining(rng: np.random.Generator, state: _Latent, rows: np.ndarray, d: np.ndarray, promo: np.ndarray) -> None:
    """Engagement decays over weeks; some settle on a low plateau instead of leaving soon."""
    onset = rng.uniform(*_ONSET_SPAN, rows.size)[:, None]
    tau = rng.uniform(14, 50, rows.size)[:, None]
    floor = np.where(rng.random(rows.size) < 0.3, rng.uniform(0.2, 0.5, rows.size), 0.0)[:, None]
    eng = floor + (1 - floor) * np.exp(-np.clip(d - onset, 0, None) / tau)
    state.engagement[rows] = eng
    state.hazard[rows] += 0.045 * (1 - eng) ** 2
    state.complaints[rows] += 0.03 * (1 - eng)
    state.tickets[rows] += 0.01 * (1 - eng)


def _abrupt(rng: np.random.Generator, state: _Latent, rows: np.ndarray, d: np.ndarray, promo: np.ndarray) -> None:
    """A bad experience: usually a burst of complaints/tickets, then most leave within days."""
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


def _new(rng: np.random.Generator, state: _Latent, rows: np.ndarray, d: np.ndarray, promo: np.ndarray) -> None:
    """Users who struggle with the product file tickets, explore few features and leave early."""
    state.join_day[rows] = rng.integers(0, d.shape[1], rows.size)
    state.difficulty[rows] = rng.beta(2.0, 3.0, rows.size)
    age = np.clip(d - state.join_day[rows][:, None], 0, None)
    q = state.difficulty[rows][:, None]
    fading = np.exp(-age / 20)
    state.engagement[rows] = 1 - 0.5 * q * (1 - fading)
    state.tickets[rows] += 0.25 * q**2 * fading
    state.hazard[rows] += 0.09 * q**3 * np.exp(-age / 25) + 0.002 * q


def _seasonal(rng: np.random.Generator, state: _Latent, rows: np.ndarray, d: np.ndarray, promo: np.ndarray) -> None:
    """Mostly quiet, very active in the shared sale weeks: long silences that end."""
    state.engagement[rows] = 0.5 + 3.0 * promo[None, :]
    state.coupon_rate[rows] = 0.15


def _price_sensitive(
    rng: np.random.Generator, state: _Latent, rows: np.ndarray, d: np.ndarray, promo: np.ndarray
) -> None:
    """They buy with coupons; once the personal deals stop, activity fades and they leave."""
    stop = rng.uniform(*_ONSET_SPAN, rows.size)
    tau = rng.uniform(10, 40, rows.size)[:, None]
    eng = 0.35 + 0.65 * np.exp(-np.clip(d - stop[:, None], 0, None) / tau)
    state.engagement[rows] = eng
    state.hazard[rows] += 0.035 * (1 - eng)
    state.complaints[rows] += 0.01 * (1 - eng)
    state.coupon_rate[rows] = rng.uniform(0.55, 0.9, rows.size)
    state.coupon_stop[rows] = stop


def _complaining(rng: np.random.Generator, state: _Latent, rows: np.ndarray, d: np.ndarray, promo: np.ndarray) -> None:
    """Complaints build up over one to three months and drag engagement down with them."""
    onset = rng.uniform(*_ONSET_SPAN, rows.size)[:, None]
    ramp = np.clip((d - onset) / rng.uniform(30, 90, rows.size)[:, None], 0, 1.5)
    state.complaints[rows] += 0.12 * ramp
    state.tickets[rows] += 0.04 * ramp
    state.engagement[rows] = 1 - 0.35 * np.clip(ramp, 0, 1)
    state.hazard[rows] += 0.035 * ramp**2


# Each persona's trajectory, in the order they draw from the random stream (loyal users keep the steady state).
_PERSONA_TRAJECTORIES: tuple[tuple[int, Callable[..., None]], ...] = (
    (DECLINING, _declining),
    (ABRUPT, _abrupt),
    (NEW, _new),
    (SEASONAL, _seasonal),
    (PRICE_SENSITIVE, _price_sensitive),
    (COMPLAINING, _complaining),
)


@dataclass
class _Traits:
    """What every persona shares, per user: activity level, spend, weekly and daily rhythm, activity mix."""

    persona: np.ndarray  # int8 index into PERSONAS
    level: np.ndarray  # mean ordinary events per active day
    spend: np.ndarray  # typical basket
    session_minutes: np.ndarray  # typical session length
    tz_shift: np.ndarray  # seconds the user's day is shifted from UTC
    weekly: np.ndarray  # users x 7 weekday multiplier, mean 1
    week_noise: np.ndarray  # users x weeks multiplier
    mix: np.ndarray  # users x activity types share
    hazard0: np.ndarray  # base probability-rate of leaving


@dataclass
class _Departure:
    """When each user of a chunk leaves for good, if they do inside the window."""

    churned: np.ndarray  # bool per user
    churn_day: np.ndarray  # day of leaving; `days` for users who stay
    churn_at: np.ndarray  # epoch seconds of leaving (meaningful only where churned)


@dataclass
class _Activity:
    """A chunk's ordinary activity events, with the day each falls on and whether a purchase used a coupon."""

    user: np.ndarray
    day: np.ndarray
    time: np.ndarray
    code: np.ndarray
    value: np.ndarray
    coupon: np.ndarray


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
    # The steps draw from `rng` in this order: reordering them changes every generated file.
    traits = _draw_traits(rng, n, days, kind)
    state = _latent_state(rng, traits.persona, traits.hazard0, days, promo)
    absent = _absences(rng, traits.persona, days)
    leaving = _departures(rng, state.hazard, start)
    active = _active_days(state, leaving, absent)
    day_start = start + np.arange(days, dtype=np.int64) * _DAY
    rate = _activity_rate(traits, state, active, dow, promo)
    activity = _activity(rng, traits, state, rate, day_start, promo, kind)

    out = _Columns()
    out.add(activity.user, activity.time, activity.code, activity.value)
    if kind == "multi":
        _add_signals(rng, out, traits, state, active, day_start)
        _add_coupon_redemptions(rng, out, activity, day_start)
        _add_refunds(rng, out, activity, state, leaving, start + days * _DAY)
        _add_unsubscribes(rng, out, leaving)

    users, times, codes, values = out.arrays()
    return {
        "user": users + first_user,
        "time": times,
        "code": codes,
        "value": values,
        "persona": traits.persona,
        "join_time": (start + state.join_day * _DAY).astype(np.float64),
        "churn_time": np.where(leaving.churned, leaving.churn_at, np.nan).astype(np.float64),
    }


def _draw_traits(rng: np.random.Generator, n: int, days: int, kind: str) -> _Traits:
    """Draw each user's persona and the heterogeneity every persona shares."""
    persona = rng.choice(len(PERSONAS), size=n, p=np.asarray(PERSONA_SHARES)).astype(np.int8)
    level = _LEVEL_MEDIAN[kind] * rng.lognormal(0.0, _LEVEL_SIGMA[kind], n) * _PERSONA_LEVEL[persona]
    spend = rng.lognormal(math.log(35.0), 0.6, n) * np.where(persona == PRICE_SENSITIVE, 0.6, 1.0)
    session_minutes = rng.lognormal(math.log(14.0), 0.5, n)
    weekend = rng.lognormal(0.0, 0.35, n)
    tz_shift = rng.normal(0.0, 2.5 * 3600, n)
    weekly = _weekly_rhythm(weekend)
    week_noise = rng.lognormal(-0.045, 0.3, (n, (days + 6) // 7))
    mix = _activity_mix(rng, persona)
    # Less active users are a little more likely to leave, so the level itself carries signal.
    hazard0 = _BASE_HAZARD * (level / _LEVEL_MEDIAN[kind]) ** -0.4 * rng.lognormal(0.0, 0.4, n)
    return _Traits(persona, level, spend, session_minutes, tz_shift, weekly, week_noise, mix, hazard0)


def _weekly_rhythm(weekend: np.ndarray) -> np.ndarray:
    """Return users x 7 weekday multipliers with mean 1: a busier Friday and each user's own weekend."""
    weekly = np.ones((weekend.size, 7))
    weekly[:, 4] = 1.1
    weekly[:, 5:] = weekend[:, None]
    weekly /= weekly.mean(axis=1, keepdims=True)
    return weekly


def _activity_mix(rng: np.random.Generator, persona: np.ndarray) -> np.ndarray:
    """Draw each user's share of every ordinary activity type; coupon buyers purchase more."""
    buyer = (persona == PRICE_SENSITIVE) | (persona == SEASONAL)
    mix = np.empty((persona.size, len(_ACTIVITY_TYPES)))
    for rows, mean in ((~buyer, _MIX_DEFAULT), (buyer, _MIX_BUYERS)):
        mix[rows] = rng.dirichlet(mean * _MIX_CONCENTRATION, int(rows.sum()))
    return mix


def _absences(rng: np.random.Generator, persona: np.ndarray, days: int) -> np.ndarray:
    """Return users x days True while a user is away for a few weeks (travel, exams) before coming back."""
    n = persona.size
    d = np.arange(days, dtype=np.float64)[None, :]
    away = rng.random(n) < _ABSENCE_SHARE
    away_start = rng.uniform(-20, days, n)[:, None]
    away_end = away_start + rng.uniform(30, 90, n)[:, None]
    return away[:, None] & (d >= away_start) & (d < away_end) & (persona != NEW)[:, None]


def _departures(rng: np.random.Generator, hazard: np.ndarray, start: int) -> _Departure:
    """Draw who leaves and when from the users x days hazard.

    The user is gone once the cumulative hazard passes an exponential threshold, so visible decline
    precedes most departures.
    """
    n, days = hazard.shape
    cumulative = np.cumsum(hazard, axis=1)
    threshold = rng.exponential(1.0, n)
    churned = cumulative[:, -1] > threshold
    churn_day = np.where(churned, np.argmax(cumulative > threshold[:, None], axis=1), days)
    churn_at = start + churn_day.astype(np.int64) * _DAY + rng.integers(1, _DAY, n)
    return _Departure(churned=churned, churn_day=churn_day, churn_at=churn_at)


def _active_days(state: _Latent, leaving: _Departure, absent: np.ndarray) -> np.ndarray:
    """Return users x days True from joining until leaving, except while away."""
    d = np.arange(absent.shape[1], dtype=np.float64)[None, :]
    return (d >= state.join_day[:, None]) & (d < leaving.churn_day[:, None]) & ~absent


def _activity_rate(
    traits: _Traits, state: _Latent, active: np.ndarray, dow: np.ndarray, promo: np.ndarray
) -> np.ndarray:
    """Return the users x days rate of ordinary activity events."""
    week = np.arange(active.shape[1]) // 7
    return (
        traits.level[:, None]
        * traits.weekly[:, dow]
        * traits.week_noise[:, week]
        * state.engagement
        * (1 + 0.2 * promo[None, :])
        * active
    )


def _activity(
    rng: np.random.Generator,
    traits: _Traits,
    state: _Latent,
    rate: np.ndarray,
    day_start: np.ndarray,
    promo: np.ndarray,
    kind: str,
) -> _Activity:
    """Draw the ordinary activity events from their rate: when, which type, and their minutes or amount."""
    user, day = _expand(rng, rate)
    time = _times(rng, day_start[day], traits.tz_shift[user])
    code = _ACTIVITY_CODES[_activity_slots(rng, traits, state, user, day, kind)]
    value = np.full(user.size, np.nan)
    # Disengaging users keep shorter sessions and smaller baskets.
    eng_at = np.minimum(state.engagement[user, day], 1.0)
    _set_session_minutes(rng, value, code, traits.session_minutes[user] * (0.4 + 0.6 * eng_at))
    p_coupon = np.where(day < state.coupon_stop[user], state.coupon_rate[user], 0.05) + 0.15 * promo[day]
    coupon = _set_purchase_amounts(rng, value, code, p_coupon, traits.spend[user] * (0.5 + 0.5 * eng_at))
    return _Activity(user=user, day=day, time=time, code=code, value=value, coupon=coupon)


def _activity_slots(
    rng: np.random.Generator, traits: _Traits, state: _Latent, user: np.ndarray, day: np.ndarray, kind: str
) -> np.ndarray:
    """Draw each event's index into `_ACTIVITY_TYPES` from its user's mix (all purchases for order exports)."""
    n_act = user.size
    if kind == "purchases":
        return np.full(n_act, _PURCHASE_SLOT)
    cum_mix = np.cumsum(traits.mix, axis=1)
    slot = np.minimum((rng.random(n_act)[:, None] > cum_mix[user]).sum(axis=1), len(_ACTIVITY_TYPES) - 1)
    # New users who find their way around use many features in their first weeks.
    age = day - state.join_day[user]
    explores = rng.random(n_act) < 0.5 * (1 - state.difficulty[user]) * np.exp(-age / 30)
    return np.where(explores & (traits.persona[user] == NEW), _ACTIVITY_TYPES.index("feature_use"), slot)


def _set_session_minutes(rng: np.random.Generator, value: np.ndarray, code: np.ndarray, typical: np.ndarray) -> None:
    """Fill in the length of every session event in `value`, around each one's `typical` minutes."""
    is_session = code == TYPE_CODE["session"]
    minutes = typical * rng.lognormal(0, 0.5, code.size)
    value[is_session] = np.round(minutes[is_session], 1)


def _set_purchase_amounts(
    rng: np.random.Generator, value: np.ndarray, code: np.ndarray, p_coupon: np.ndarray, basket: np.ndarray
) -> np.ndarray:
    """Fill in the amount of every purchase event in `value`, discounted where a coupon was used; return which were."""
    n_act = code.size
    is_purchase = code == TYPE_CODE["purchase"]
    coupon = is_purchase & (rng.random(n_act) < p_coupon)
    amount = basket * rng.lognormal(0, 0.35, n_act)
    amount *= np.where(coupon, rng.uniform(0.6, 0.85, n_act), 1.0)
    value[is_purchase] = np.maximum(np.round(amount[is_purchase], 2), 0.5)
    return coupon


def _add_signals(
    rng: np.random.Generator,
    out: _Columns,
    traits: _Traits,
    state: _Latent,
    active: np.ndarray,
    day_start: np.ndarray,
) -> None:
    """Add complaints and support tickets, at rates driven by the same latent state as leaving."""
    s_user, s_day = _expand(rng, (state.complaints + state.tickets) * active)
    complaint_rate = state.complaints[s_user, s_day]
    p_complaint = complaint_rate / (complaint_rate + state.tickets[s_user, s_day])
    s_code = np.where(rng.random(s_user.size) < p_complaint, TYPE_CODE["complaint"], TYPE_CODE["support_ticket"])
    out.add(s_user, _times(rng, day_start[s_day], traits.tz_shift[s_user]), s_code)


def _add_coupon_redemptions(
    rng: np.random.Generator, out: _Columns, activity: _Activity, day_start: np.ndarray
) -> None:
    """Add a coupon redemption moments before each purchase it discounts."""
    coupon = activity.coupon
    redeemed = activity.time[coupon] - rng.integers(5, 300, int(coupon.sum()))
    out.add(
        activity.user[coupon], np.maximum(redeemed, day_start[activity.day[coupon]] + 1), TYPE_CODE["coupon_redeem"]
    )


def _add_refunds(
    rng: np.random.Generator, out: _Columns, activity: _Activity, state: _Latent, leaving: _Departure, end: int
) -> None:
    """Add refunds, which follow purchases more often when the user is unhappy, and never after they left."""
    user, day, time = activity.user, activity.day, activity.time
    is_purchase = activity.code == TYPE_CODE["purchase"]
    refund = is_purchase & (rng.random(user.size) < 0.03 + 0.5 * state.complaints[user, day])
    refund_time = time[refund] + rng.integers(_DAY, 10 * _DAY, int(refund.sum()))
    keep = refund_time <= np.where(leaving.churned, leaving.churn_at, end)[user[refund]]
    out.add(user[refund][keep], refund_time[keep], TYPE_CODE["refund"], activity.value[refund][keep])


def _add_unsubscribes(rng: np.random.Generator, out: _Columns, leaving: _Departure) -> None:
    """Add an unsubscribe at the moment of leaving for some of the users who leave."""
    churned = leaving.churned
    says_bye = np.flatnonzero(churned & (rng.random(churned.size) < _UNSUBSCRIBE_SHARE))
    out.add(says_bye, leaving.churn_at[says_bye], TYPE_CODE["unsubscribe"])


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
