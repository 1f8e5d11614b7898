"""Model features computed from behaviour state as of any date, vectorised over users.

Rates are exponentially weighted events (or amounts) per day: a decayed sum with half-life h
divided by its effective window h / ln 2. Trends compare the 7-day rate with the 120-day rate
on a log scale, so "half as active as usual" reads the same for heavy and light users.
"""

from __future__ import annotations

import math

import numpy as np

from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY
from chalicelib.scoring.state import HALF_LIVES_DAYS, col, decayed_at

SHORT, MID, LONG = HALF_LIVES_DAYS
MAX_DAYS = 3650.0
# Floors that keep trends finite and stop a single event from looking like a surge.
_RATE_FLOOR = 1.0 / 60.0  # events per day
_SPEND_FLOOR = 0.5  # currency units per day
# Every event type but unsubscribe gets its own rates.
# Rates over tenure count a user at least a week old, so a first-day user's rate is not a burst.
_MIN_TENURE_DAYS = 7.0
_DAYS_PER_MONTH = 30.0
_RATE_TYPES = tuple(t for t in EVENT_TYPES if t != "unsubscribe")
# Engagement is what a user does with the product. Complaints, tickets and refunds are signals about
# the relationship; counted as activity they would make a complaint surge look like engagement.
_ACTIVITY_TYPES = tuple(t for t in _RATE_TYPES if t not in ("complaint", "support_ticket", "refund"))

# Feature name -> the reason code it speaks for, or None for context (how big or old a user is),
# which is never a reason in itself. Order is the model's column order. Groups are kept small and
# of similar size, because a reason's effect is measured by resetting its whole group at once.
FEATURE_REASONS: dict[str, str | None] = {
    "recency_days": "inactivity",
    "days_since_login": "inactivity",
    "activity_rate_short": "inactivity",
    "recency_over_gap": "inactivity",
    "active_share": "inactivity",
    "activity_trend": "engagement_drop",
    "activity_trend_mid": "engagement_drop",
    "activity_rate_mid": "engagement_drop",
    "session_minutes_per_day": "engagement_drop",
    "recent_over_lifetime": "engagement_drop",
    "days_since_purchase": "spend_drop",
    "purchase_gap_ratio": "spend_drop",
    "spend_rate_mid": "spend_drop",
    "spend_trend": "spend_drop",
    "coupon_reliance": "price_sensitivity",
    "coupon_reliance_recent": "price_sensitivity",
    "refund_ratio": "price_sensitivity",
    "complaints_recent": "complaints",
    "complaint_trend": "complaints",
    "support_tickets_recent": "feature_difficulty",
    "feature_use_share": "feature_difficulty",
    "feature_use_trend": "feature_difficulty",
    "tenure_days": "new_user",
    "unsubscribed": "unsubscribed",
    "log_events_total": None,
    "activity_rate_long": None,
    "avg_session_minutes": None,
    "log_purchases": None,
    "log_net_spend": None,
    "avg_order_value": None,
    "events_per_month": None,
    "spend_per_month": None,
    **{f"rate_{t}_short": None for t in _RATE_TYPES},
    **{f"rate_{t}_long": None for t in _RATE_TYPES},
}
for _t, _code in (
    ("login", "inactivity"),
    ("session", "engagement_drop"),
    ("content_view", "engagement_drop"),
    ("social_interaction", "engagement_drop"),
    ("purchase", "spend_drop"),
    ("coupon_redeem", "price_sensitivity"),
    ("refund", "price_sensitivity"),
    ("complaint", "complaints"),
    ("support_ticket", "feature_difficulty"),
    ("feature_use", "feature_difficulty"),
):
    FEATURE_REASONS[f"rate_{_t}_short"] = _code

FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_REASONS)
REASON_CODES: tuple[str, ...] = tuple(dict.fromkeys(c for c in FEATURE_REASONS.values() if c is not None))


def _rate(values: np.ndarray, field: str, hl: float, as_of: float) -> np.ndarray:
    """Return events (or amount) per day over an exponential window of half-life `hl`."""
    return decayed_at(values, f"{field}_{hl:g}d", as_of) * math.log(2.0) / hl


def _days_since(values: np.ndarray, field: str, as_of: float) -> np.ndarray:
    """Return days from a time field to `as_of`, capped; users without that event get the cap."""
    t = values[:, col(field)]
    days = np.where(np.isfinite(t), (as_of - np.where(np.isfinite(t), t, 0.0)) / SECONDS_PER_DAY, MAX_DAYS)
    return np.clip(days, 0.0, MAX_DAYS)


def _trend(short: np.ndarray, long: np.ndarray, floor: float) -> np.ndarray:
    return np.log((short + floor) / (long + floor))


def _own_rhythm(f: dict[str, np.ndarray], events: np.ndarray, net_spend: np.ndarray) -> dict[str, np.ndarray]:
    """Return the features measured against the user's own tenure and rhythm, which travel in time.

    A model trained when every user was at most six months old still reads a one-year-old user right: "silent for
    three of their usual gaps" or "half as active as over their life so far" mean the same at any age, whereas
    lifetime totals and day counts grow with tenure past anything seen in training.
    """
    tenure, recency = f["tenure_days"], f["recency_days"]
    months = np.maximum(tenure, _MIN_TENURE_DAYS) / _DAYS_PER_MONTH
    span = np.maximum(tenure - recency, 0.0)  # first to last event
    repeat = events >= 2
    gap = span / np.maximum(events - 1.0, 1.0)
    lifetime_rate = events / (months * _DAYS_PER_MONTH)
    return {
        # Users with fewer than two events have no rhythm yet: -1 keeps them apart from any real ratio.
        "recency_over_gap": np.where(repeat, np.clip(recency / np.maximum(gap, 0.5), 0.0, 100.0), -1.0),
        "active_share": np.where(tenure > 0, span / np.maximum(tenure, 1e-3), 0.0),
        "recent_over_lifetime": _trend(f["activity_rate_mid"], lifetime_rate, _RATE_FLOOR),
        "events_per_month": events / months,
        "spend_per_month": net_spend / months,
    }


def compute_features(values: np.ndarray, as_of: float) -> np.ndarray:
    """Return the feature matrix [users, FEATURE_NAMES] of state rows evaluated at `as_of`."""
    n = values.shape[0]
    f: dict[str, np.ndarray] = {}
    count = {t: values[:, col(f"count_{t}")] for t in EVENT_TYPES}
    rate_short = {t: _rate(values, f"decay_{t}", SHORT, as_of) for t in EVENT_TYPES}
    rate_mid = {t: _rate(values, f"decay_{t}", MID, as_of) for t in EVENT_TYPES}
    rate_long = {t: _rate(values, f"decay_{t}", LONG, as_of) for t in EVENT_TYPES}

    f["recency_days"] = _days_since(values, "last_seen", as_of)
    f["days_since_purchase"] = _days_since(values, "last_purchase", as_of)
    f["days_since_login"] = _days_since(values, "last_login", as_of)
    purchases = count["purchase"]
    first_p, last_p = values[:, col("first_purchase")], values[:, col("last_purchase")]
    gap_days = np.where(
        purchases >= 2,
        (np.nan_to_num(last_p, neginf=0.0) - np.nan_to_num(first_p, posinf=0.0))
        / np.maximum(purchases - 1, 1)
        / SECONDS_PER_DAY,
        np.nan,
    )
    f["purchase_gap_ratio"] = np.where(
        purchases >= 2, np.clip(f["days_since_purchase"] / np.maximum(np.nan_to_num(gap_days), 1.0), 0, 50), 0.0
    )
    f["tenure_days"] = _days_since(values, "first_seen", as_of)

    total = sum(count[t] for t in _ACTIVITY_TYPES)
    act = {
        "short": sum(rate_short[t] for t in _ACTIVITY_TYPES),
        "mid": sum(rate_mid[t] for t in _ACTIVITY_TYPES),
        "long": sum(rate_long[t] for t in _ACTIVITY_TYPES),
    }
    f["log_events_total"] = np.log1p(total)
    f["activity_rate_short"] = act["short"]
    f["activity_rate_mid"] = act["mid"]
    f["activity_rate_long"] = act["long"]
    f["activity_trend"] = _trend(act["short"], act["long"], _RATE_FLOOR)
    f["activity_trend_mid"] = _trend(act["mid"], act["long"], _RATE_FLOOR)
    sessions = count["session"]
    f["session_minutes_per_day"] = _rate(values, "decay_value_session", MID, as_of)
    f["avg_session_minutes"] = values[:, col("value_session")] / np.maximum(sessions, 1.0)

    spend = values[:, col("value_purchase")]
    refunds = values[:, col("value_refund")]
    f["log_purchases"] = np.log1p(purchases)
    f["log_net_spend"] = np.log1p(np.maximum(spend - refunds, 0.0))
    f["avg_order_value"] = spend / np.maximum(purchases, 1.0)
    spend_short = _rate(values, "decay_value_purchase", SHORT, as_of)
    spend_long = _rate(values, "decay_value_purchase", LONG, as_of)
    f["spend_rate_mid"] = _rate(values, "decay_value_purchase", MID, as_of)
    f["spend_trend"] = _trend(spend_short, spend_long, _SPEND_FLOOR)

    coupons = count["coupon_redeem"]
    f["coupon_reliance"] = coupons / np.maximum(purchases, 1.0)
    f["coupon_reliance_recent"] = rate_mid["coupon_redeem"] / (rate_mid["purchase"] + _RATE_FLOOR)
    f["refund_ratio"] = refunds / (spend + 1.0)

    f["complaints_recent"] = decayed_at(values, f"decay_complaint_{MID:g}d", as_of)
    f["complaint_trend"] = _trend(rate_short["complaint"], rate_long["complaint"], _RATE_FLOOR)
    f["support_tickets_recent"] = decayed_at(values, f"decay_support_ticket_{MID:g}d", as_of)
    f["feature_use_share"] = rate_mid["feature_use"] / (act["mid"] + _RATE_FLOOR)
    f["feature_use_trend"] = _trend(rate_short["feature_use"], rate_long["feature_use"], _RATE_FLOOR)
    f["unsubscribed"] = (values[:, col("last_unsubscribe")] >= values[:, col("last_seen")]).astype(np.float64) * (
        count["unsubscribe"] > 0
    )
    f.update(_own_rhythm(f, total, np.maximum(spend - refunds, 0.0)))
    for t in _RATE_TYPES:
        f[f"rate_{t}_short"] = rate_short[t]
        f[f"rate_{t}_long"] = rate_long[t]

    out = np.empty((n, len(FEATURE_NAMES)))
    for j, name in enumerate(FEATURE_NAMES):
        out[:, j] = f[name]
    return out
