"""Model quality figures: ranking, calibration and what a team acting on the top decile gets."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_ready(value: Any) -> Any:
    """Return `value` with every float that is not finite (an undefined figure: no user in a tier, one class
    only) replaced by None, so that it is written as JSON's null: NaN and Infinity are not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value


def lift_top_decile(y: np.ndarray, p: np.ndarray) -> float:
    """Return the churn rate among the 10% highest-scored users divided by the overall rate."""
    if y.size == 0 or y.mean() == 0:
        return float("nan")
    k = max(1, int(np.ceil(0.1 * y.size)))
    top = np.argsort(-p, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Return auc, pr_auc, brier, log_loss, lift_top_decile, n and churn_rate."""
    from sklearn.metrics import brier_score_loss, log_loss

    y = np.asarray(y, dtype=int)
    return {
        **ranking_metrics(y, p),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "lift_top_decile": lift_top_decile(y, p),
        "n": int(y.size),
        "churn_rate": float(y.mean()) if y.size else float("nan"),
    }


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Return auc and pr_auc of a score that only ranks (higher: more likely a churner), not a probability."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=int)
    both = 0 < y.sum() < y.size
    return {
        "auc": float(roc_auc_score(y, score)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, score)) if both else float("nan"),
    }


def tier_performance(y: np.ndarray, p: np.ndarray, thresholds: dict[str, float]) -> dict[str, dict[str, float]]:
    """Return each risk tier's share of users, precision (churn rate) and recall of churners."""
    churners = max(int(y.sum()), 1)
    bounds = {"high": (thresholds["high"], np.inf), "medium": (thresholds["medium"], thresholds["high"])}
    bounds["low"] = (-np.inf, thresholds["medium"])
    out = {}
    for tier, (lo, hi) in bounds.items():
        mask = (p >= lo) & (p < hi)
        out[tier] = {
            "share": float(mask.mean()) if y.size else 0.0,
            "precision": float(y[mask].mean()) if mask.any() else float("nan"),
            "recall": float(y[mask].sum() / churners),
        }
    return out
