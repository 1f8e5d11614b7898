"""Risk tiers from churn probability and value tiers from spend, with thresholds from the manifest."""

from __future__ import annotations

from typing import Any

import numpy as np

from chalicelib.features import FEATURE_NAMES

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
