"""RFM segments with the names CRM teams use, and an activity cluster (high / medium / low) by k-means.

Both are fitted at training on the users at the latest cutoff and kept in the manifest as plain numbers
(quintile edges, a scaler and k-means centres), so scoring applies them without unpickling anything.
Recency, frequency and money are scored 1-5 against the training users' quintiles; a log without
purchases measures frequency and money by activity instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from chalicelib.scoring.features import FEATURE_NAMES

SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new_customers",
    "need_attention",
    "about_to_sleep",
    "cant_lose",
    "at_risk",
    "hibernating",
    "lost",
)
# What a user's engagement looks like to the clustering: events per day over a week, a month and four months.
ACTIVITY_FEATURES = ("activity_rate_short", "activity_rate_mid", "activity_rate_long", "session_minutes_per_day")
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
_QUINTILES = (0.2, 0.4, 0.6, 0.8)


def fit_segments(features: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Learn RFM quintile edges and three activity clusters from training users' features."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    basis = "purchases" if (np.expm1(features[:, _COL["log_purchases"]]) > 0).sum() >= 20 else "activity"
    recency, frequency, money = _rfm_inputs(features, basis)
    x = _activity_inputs(features)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    with warnings.catch_warnings():
        # Fewer distinct users than clusters (a degenerate log): equal centres are what is meant.
        warnings.filterwarnings("ignore", "Number of distinct clusters", ConvergenceWarning)
        km = KMeans(n_clusters=3, n_init=10, random_state=seed).fit((x - mean) / scale)
    centres = km.cluster_centers_
    # Clusters are named by how active their centre is: the month's rate, back in events per day.
    order = np.argsort(-(centres[:, 1] * scale[1] + mean[1]))
    return {
        "basis": basis,
        "rfm_edges": {
            "recency_days": _edges(recency),
            "frequency": _edges(frequency),
            "money": _edges(money),
        },
        "activity": {
            "features": list(ACTIVITY_FEATURES),
            "mean": mean.tolist(),
            "scale": scale.tolist(),
            "centres": centres[order].tolist(),
            "labels": ["high", "medium", "low"],
        },
    }


def rfm_scores(features: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return recency, frequency and money scores 1-5 (5 = most recent, most frequent, most spent)."""
    recency, frequency, money = _rfm_inputs(features, spec["basis"])
    edges = spec["rfm_edges"]
    r = 5 - np.searchsorted(edges["recency_days"], recency, side="left")
    f = 1 + np.searchsorted(edges["frequency"], frequency, side="right")
    m = 1 + np.searchsorted(edges["money"], money, side="right")
    return r, f, m


def rfm_segments(features: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Return each user's RFM segment name."""
    r, f, m = rfm_scores(features, spec)
    fm = np.floor((f + m) / 2 + 0.5)
    conditions = [
        (r >= 4) & (fm >= 4),
        (r == 3) & (fm >= 4),
        (r >= 4) & (fm <= 1),
        r >= 4,
        (r == 3) & (fm == 3),
        r == 3,
        (r == 1) & (fm >= 4),
        fm >= 3,
        r == 2,
    ]
    choices = [
        "champions",
        "loyal",
        "new_customers",
        "potential_loyalists",
        "need_attention",
        "about_to_sleep",
        "cant_lose",
        "at_risk",
        "hibernating",
    ]
    return np.select(conditions, choices, default="lost").astype(object)


def activity_clusters(features: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Return each user's activity cluster: the label of the nearest k-means centre."""
    act = spec["activity"]
    x = (_activity_inputs(features) - np.array(act["mean"])) / np.array(act["scale"])
    distance = ((x[:, None, :] - np.array(act["centres"])[None, :, :]) ** 2).sum(axis=2)
    return np.array(act["labels"], dtype=object)[distance.argmin(axis=1)]


def _rfm_inputs(features: np.ndarray, basis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    recency = features[:, _COL["recency_days"]]
    if basis == "purchases":
        frequency = np.expm1(features[:, _COL["log_purchases"]])
        money = np.maximum(np.expm1(features[:, _COL["log_net_spend"]]), 0.0)
    else:
        frequency = np.expm1(features[:, _COL["log_events_total"]])
        money = features[:, _COL["activity_rate_long"]]
    return recency, frequency, money


def _activity_inputs(features: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(features[:, [_COL[n] for n in ACTIVITY_FEATURES]], 0.0))


def _edges(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(values, _QUINTILES)]
