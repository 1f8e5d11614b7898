"""Buy-till-you-die signal as model features: a BG/NBD fitted at training, inside the model pipeline.

The behaviour features already hold BG/NBD's sufficient statistics (events, tenure, recency); a fitted
BG/NBD turns them into P(alive) and P(no event in the horizon), a smooth, strong prior on purchase-like
logs that a tree model would otherwise have to learn piecewise. Being a Pipeline step, it is fitted with
the model, pickled with it, and applied wherever the model predicts (scores and reason effects alike).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from chalicelib.baselines import BgNbd
from chalicelib.features import FEATURE_NAMES

_EVENTS = FEATURE_NAMES.index("log_events_total")
_TENURE = FEATURE_NAMES.index("tenure_days")
_RECENCY = FEATURE_NAMES.index("recency_days")


def btyd_from_features(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return BG/NBD inputs (x repeat events, t_x and T in days) from feature rows."""
    T = np.maximum(X[:, _TENURE], 1e-3)
    x = np.maximum(np.round(np.expm1(X[:, _EVENTS])) - 1.0, 0.0)
    t_x = np.where(x > 0, np.clip(T - X[:, _RECENCY], 0.0, T), 0.0)
    return x, t_x, T


class BtydFeatures(BaseEstimator, TransformerMixin):
    """Appends BG/NBD P(alive) and P(no event in `horizon_days`) to the feature rows."""

    def __init__(self, horizon_days: float = 30.0) -> None:
        self.horizon_days = horizon_days

    def fit(self, X: np.ndarray, y: Any = None) -> BtydFeatures:
        """Fit the BG/NBD on the training rows (unsupervised)."""
        model = BgNbd().fit(*btyd_from_features(np.asarray(X, dtype=np.float64)))
        # A degenerate log (say, every user seen once) gives no usable fit: the columns are then constant.
        self.bgnbd_ = model if np.isfinite(model.log_likelihood_) else None
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Return X with two more columns: P(alive) and P(no event in the horizon)."""
        X = np.asarray(X, dtype=np.float64)
        if self.bgnbd_ is None:
            return np.column_stack([X, np.ones(len(X)), np.full(len(X), 0.5)])
        x, t_x, T = btyd_from_features(X)
        return np.column_stack(
            [X, self.bgnbd_.p_alive(x, t_x, T), self.bgnbd_.p_no_event(x, t_x, T, self.horizon_days)]
        )
