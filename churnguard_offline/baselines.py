"""Yardsticks a churn model must beat out of time: a recency rule, an RFM score, and BG/NBD and Pareto/NBD models.

Each baseline is fitted at one origin and applied at a later one, and gives every user a probability of
churn, P(no event of any kind in the next `horizon_days`). The recency and RFM baselines turn a score into
that probability with a one-feature logistic fit on the fitting origin's labels. BG/NBD is fitted without
labels and predicts the horizon directly, so it is also a check on how far pure transaction timing goes; so is
Pareto/NBD, whose customers may drop out at any time rather than only after a transaction.

Buy-till-you-die models learn no label, so they can also be fitted on the judged users' own history at the
scoring date itself, as they are used in practice: `at_cutoff` gives that stronger yardstick, with Pareto/NBD's
other standard answer, the transactions it expects in the horizon, as a ranking beside its probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit

from chalicelib.errors import InputError
from chalicelib.scoring.btyd import BgNbd, btyd_inputs
from chalicelib.scoring.events import EVENT_TYPES
from chalicelib.scoring.features import FEATURE_NAMES
from chalicelib.scoring.pareto_nbd import ParetoNbd
from chalicelib.scoring.state import col
from churnguard_offline.metrics import classification_metrics, ranking_metrics

BASELINE_NAMES: tuple[str, ...] = ("recency", "rfm", "bg_nbd", "pareto_nbd")
# The buy-till-you-die yardsticks fitted at the scoring date; "pareto_nbd_expected" is a ranking, not a probability.
AT_CUTOFF_NAMES: tuple[str, ...] = ("bg_nbd", "pareto_nbd", "pareto_nbd_expected")
_RECENCY = FEATURE_NAMES.index("recency_days")
_COUNT_COLS = [col(f"count_{t}") for t in EVENT_TYPES]
_QUINTILES = (0.2, 0.4, 0.6, 0.8)


class _Logistic:
    """P(label = 1) as a logistic function of one score, fitted by Newton's method."""

    # A ridge of one pseudo-observation on the standardised coefficients: negligible on real data,
    # and it keeps the fit finite when the score separates the labels perfectly.
    RIDGE = 1.0

    def fit(self, z: np.ndarray, y: np.ndarray) -> _Logistic:
        self.center = float(z.mean())
        self.scale = float(z.std()) or 1.0
        X = np.column_stack([np.ones_like(z), (z - self.center) / self.scale])
        w = np.zeros(2)
        for _ in range(100):
            p = expit(X @ w)
            grad = X.T @ (p - y) + self.RIDGE * w
            hess = (X * (p * (1.0 - p))[:, None]).T @ X + self.RIDGE * np.eye(2)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.max(np.abs(step)) < 1e-10:
                break
        self.coef = w
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        return expit(self.coef[0] + self.coef[1] * (z - self.center) / self.scale)


def _rfm_parts(values: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (days since last event, lifetime events, net spend) per user."""
    events = values[:, _COUNT_COLS].sum(axis=1)
    net_spend = values[:, col("value_purchase")] - values[:, col("value_refund")]
    return features[:, _RECENCY], events, net_spend


def _quintile(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return 1..5: one more than the number of quintile edges strictly below each value."""
    return 1.0 + np.searchsorted(edges, v, side="left")


class Baselines:
    """Fitted on one origin (values, features, labels, as_of, horizon), applied at another."""

    def fit(
        self, values: np.ndarray, features: np.ndarray, labels: np.ndarray, as_of: float, horizon_days: float
    ) -> Baselines:
        """Fit the baselines on one origin's users and labels; return self."""
        y = np.asarray(labels, dtype=np.float64)
        if y.size == 0:
            raise InputError("baselines need at least one labelled user to fit on")
        self.horizon_days = float(horizon_days)
        recency, events, spend = _rfm_parts(values, features)
        self.recency = _Logistic().fit(np.log1p(recency), y)
        self.r_edges = np.quantile(recency, _QUINTILES)
        self.f_edges = np.quantile(events, _QUINTILES)
        spenders = spend[spend > 0]
        self.m_edges = np.quantile(spenders, _QUINTILES) if spenders.size else np.full(4, np.inf)
        self.rfm = _Logistic().fit(self._rfm_score(values, features), y)
        self.bg_nbd = BgNbd().fit(*btyd_inputs(values, as_of))
        self.pareto_nbd = ParetoNbd().fit(*btyd_inputs(values, as_of))
        return self

    def predict(self, values: np.ndarray, features: np.ndarray, as_of: float) -> dict[str, np.ndarray]:
        """Return each baseline's churn probability per user, by name in BASELINE_NAMES order."""
        return {
            "recency": self.recency.predict(np.log1p(features[:, _RECENCY])),
            "rfm": self.rfm.predict(self._rfm_score(values, features)),
            "bg_nbd": self.bg_nbd.p_no_event(*btyd_inputs(values, as_of), self.horizon_days),
            "pareto_nbd": self.pareto_nbd.p_no_event(*btyd_inputs(values, as_of), self.horizon_days),
        }

    def _rfm_score(self, values: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Return R + F + M (3..15); recent, frequent, big spenders score high, non-spenders get M = 1."""
        recency, events, spend = _rfm_parts(values, features)
        r = 6.0 - _quintile(recency, self.r_edges)
        f = _quintile(events, self.f_edges)
        m = np.where(spend > 0, _quintile(spend, self.m_edges), 1.0)
        return r + f + m


def evaluate_baselines(fit_set: Any, eval_set: Any) -> dict[str, dict[str, float]]:
    """Return AUC, PR-AUC and Brier score of each baseline fitted on `fit_set` and scored on `eval_set`."""
    fitted = Baselines().fit(fit_set.values, fit_set.features, fit_set.labels, fit_set.cutoff, fit_set.horizon_days)
    out = {}
    for name, p in fitted.predict(eval_set.values, eval_set.features, eval_set.cutoff).items():
        m = classification_metrics(eval_set.labels, p)
        out[name] = {"auc": m["auc"], "pr_auc": m["pr_auc"], "brier": m["brier"]}
    return out


def at_cutoff(values: np.ndarray, as_of: float, horizon_days: float) -> dict[str, np.ndarray]:
    """Return the churn scores of BG/NBD and Pareto/NBD fitted on these users' own (x, t_x, T) at `as_of`, by name
    in AT_CUTOFF_NAMES order: each one's P(no transaction in the horizon), and Pareto/NBD's expected transactions
    there, negated so that a higher score means more churn (fewer purchases expected first).

    No label is read, so the fit may see the very users it scores: nothing of their future is in it.
    """
    return btyd_scores(btyd_inputs(values, as_of), horizon_days)


def btyd_scores(inputs: tuple[np.ndarray, np.ndarray, np.ndarray], horizon_days: float) -> dict[str, np.ndarray]:
    """Return `at_cutoff`'s scores for customers given as (x, t_x, T) in days, both models fitted on them."""
    bg_nbd, pareto_nbd = BgNbd().fit(*inputs), ParetoNbd().fit(*inputs)
    _alive, none, expected = pareto_nbd.horizon_view(*inputs, horizon_days)
    return {
        "bg_nbd": bg_nbd.p_no_event(*inputs, horizon_days),
        "pareto_nbd": none,
        "pareto_nbd_expected": -expected,
    }


def evaluate_at_cutoff(eval_set: Any) -> dict[str, dict[str, float]]:
    """Return the metrics of each `at_cutoff` yardstick on `eval_set`: AUC, PR-AUC and, for the probabilities,
    the Brier score (a ranking has none). A yardstick whose fit gave a score that is not a number for some user
    (a fit with no finite optimum) is left out: the caller says which."""
    out = {}
    for name, score in at_cutoff(eval_set.values, eval_set.cutoff, eval_set.horizon_days).items():
        if not np.isfinite(score).all():
            continue
        if name == "pareto_nbd_expected":
            out[name] = ranking_metrics(eval_set.labels, score)
        else:
            m = classification_metrics(eval_set.labels, score)
            out[name] = {"auc": m["auc"], "pr_auc": m["pr_auc"], "brier": m["brier"]}
    return out
