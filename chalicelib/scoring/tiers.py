"""Risk tiers from churn probability and value tiers from spend, with thresholds from the manifest."""

from __future__ import annotations

from typing import Any

import numpy as np

from chalicelib.scoring.features import FEATURE_NAMES

_NET_SPEND = FEATURE_NAMES.index("log_net_spend")
_EVENTS = FEATURE_NAMES.index("log_events_total")


def risk_tiers(probability: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """Return 'high' / 'medium' / 'low' per probability (high >= thresholds['high'], ...)."""
    return np.where(
        probability >= thresholds["high"], "high", np.where(probability >= thresholds["medium"], "medium", "low")
    ).astype(object)


def value_basis(features: np.ndarray, basis: str) -> np.ndarray:
    """Return what a user's value is measured by: lifetime net spend, or activity when nobody buys."""
    column = _NET_SPEND if basis == "net_spend" else _EVENTS
    return np.expm1(features[:, column])


def fit_value_thresholds(features: np.ndarray) -> dict[str, Any]:
    """Learn value-tier cut points: top 20% of paying users are high, the next 30% medium."""
    spend = value_basis(features, "net_spend")
    basis = "net_spend"
    positive = spend[spend > 0]
    if positive.size < 20:
        # A log with (almost) no purchases: value follows engagement instead of money.
        basis = "activity"
        positive = value_basis(features, basis)
        positive = positive[positive > 0]
    if positive.size == 0:
        return {"basis": basis, "high": float("inf"), "medium": float("inf")}
    high, medium = np.quantile(positive, [0.8, 0.5])
    return {"basis": basis, "high": float(high), "medium": float(medium)}


def value_tiers(features: np.ndarray, thresholds: dict[str, Any]) -> np.ndarray:
    """Return 'high' / 'medium' / 'low' value per user from the learned thresholds."""
    value = value_basis(features, thresholds["basis"])
    high, medium = float(thresholds["high"]), float(thresholds["medium"])
    return np.where(value >= high, "high", np.where((value >= medium) & (value > 0), "medium", "low")).astype(object)


def expected_value_thresholds(
    cost_high: float, cost_medium: float, value_at_risk: float, save_rate: float
) -> dict[str, float]:
    """Return probability thresholds where acting pays: p x value at risk x save rate >= action cost.

    A tier's action is worth its cost for a user whose churn probability p satisfies
    p * value_at_risk * save_rate >= cost, so the threshold is cost / (value_at_risk * save_rate),
    kept inside [0.05, 0.95] and with high above medium.
    """
    gain = max(value_at_risk * save_rate, 1e-9)
    medium = float(np.clip(cost_medium / gain, 0.05, 0.9))
    high = float(np.clip(cost_high / gain, medium + 0.05, 0.95))
    return {"high": round(high, 4), "medium": round(medium, 4)}


def capacity_thresholds(probability: np.ndarray, high_share: float, medium_share: float) -> dict[str, float]:
    """Return thresholds that put the top `high_share` of users in high and the next `medium_share` in medium."""
    high = float(np.quantile(probability, 1.0 - high_share))
    medium = float(np.quantile(probability, max(0.0, 1.0 - high_share - medium_share)))
    return {"high": round(high, 6), "medium": round(min(medium, high), 6)}
