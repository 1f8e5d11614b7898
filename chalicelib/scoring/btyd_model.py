"""A buy-till-you-die model on its own, as a scikit-learn classifier: the model of a customer too small to learn from.

Below the labelled rows a learned model needs, training deploys BG/NBD or Pareto/NBD alone. Both are fitted on
the behaviour features' own summary of each user (events, tenure, recency: `btyd_from_features`) without labels,
and give P(no event in the horizon) directly, which is what the churn probability means. Being a classifier
over the same feature rows, it is pickled, loaded, scored and explained (reason effects re-predict it with
feature groups reset) exactly as a learned pipeline is, and it refers only to deployed code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from chalicelib.errors import InputError
from chalicelib.scoring.btyd import BgNbd, BtydFit, btyd_from_features, finite_fit
from chalicelib.scoring.pareto_nbd import ParetoNbd

BTYD_MODELS = {"bg_nbd": BgNbd, "pareto_nbd": ParetoNbd}


class BtydFitError(InputError):
    """Rows on which a buy-till-you-die model has no finite fit (say, every user seen once at one instant)."""


class BtydClassifier(ClassifierMixin, BaseEstimator):
    """P(churn) = P(no event in `horizon_days`) under a BG/NBD or Pareto/NBD model fitted on the feature rows."""

    # What a model pickled before `fitted` existed reads back (scikit-learn's get_params asks for every argument).
    fitted: BtydFit | None = None

    def __init__(self, model: str = "pareto_nbd", horizon_days: float = 30.0, fitted: BtydFit | None = None) -> None:
        self.model = model
        self.horizon_days = horizon_days
        self.fitted = fitted  # both models fitted once on the same rows (BtydFit), taken instead of fitting again

    def fit(self, X: Any, y: Any = None) -> BtydClassifier:
        """Fit the buy-till-you-die model on X (unsupervised: y only sets `classes_`); return self."""
        if self.model not in BTYD_MODELS:
            raise InputError(f"model must be one of {', '.join(BTYD_MODELS)}, not {self.model!r}")
        if not (np.isfinite(self.horizon_days) and self.horizon_days > 0):
            raise InputError(f"horizon_days must be a positive number, not {self.horizon_days!r}")
        self.classes_ = _classes(y)
        fitted = self._fitted_on(_rows(X))
        if fitted is None:
            raise BtydFitError(f"{self.model} has no finite fit on these {len(_rows(X))} users")
        self.btyd_ = fitted
        self.params_ = dict(fitted.params_)
        return self

    def _fitted_on(self, X: np.ndarray) -> BgNbd | ParetoNbd | None:
        """Return the model fitted on X (taken from `fitted` when given), or None where no fit is finite."""
        if self.fitted is not None:
            return self.fitted.bgnbd if self.model == "bg_nbd" else self.fitted.paretonbd
        return finite_fit(BTYD_MODELS[self.model], X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Return [[P(an event), P(no event)]] per row, in the horizon after each row's as-of time."""
        if not hasattr(self, "btyd_"):
            raise InputError("BtydClassifier is not fitted")
        p = self.btyd_.p_no_event(*btyd_from_features(_rows(X)), self.horizon_days)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """Return 1 (churn) where P(no event) is at least one half, else 0."""
        return self.classes_[(self.predict_proba(X)[:, 1] >= 0.5).astype(int)]


def _rows(X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"feature rows must be a 2-d array, not {X.ndim}-d")
    return X


def _classes(y: Any) -> np.ndarray:
    """Return the classes [0, 1]: churn is always the second column, whatever labels the fit rows happen to hold."""
    if y is not None and not np.isin(np.unique(np.asarray(y)), (0, 1)).all():
        raise InputError("labels must be 0 (stayed) or 1 (churned)")
    return np.array([0, 1])
