"""Buy-till-you-die: the BG/NBD model, and its signal as model features fitted inside the model pipeline.

The behaviour features already hold BG/NBD's sufficient statistics (events, tenure, recency); a fitted
BG/NBD turns them into P(alive) and P(no event in the horizon), a smooth, strong prior on purchase-like
logs that a tree model would otherwise have to learn piecewise. Being a Pipeline step, it is fitted with
the model, pickled with it, and applied wherever the model predicts (scores and reason effects alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln
from sklearn.base import BaseEstimator, TransformerMixin

from chalicelib.errors import InputError
from chalicelib.scoring.btyd_summary import checked_inputs, fit_inputs
from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY
from chalicelib.scoring.features import FEATURE_NAMES
from chalicelib.scoring.pareto_nbd import ParetoNbd
from chalicelib.scoring.state import col

_EVENTS = FEATURE_NAMES.index("log_events_total")
_TENURE = FEATURE_NAMES.index("tenure_days")
_RECENCY = FEATURE_NAMES.index("recency_days")
_COUNT_COLS = [col(f"count_{t}") for t in EVENT_TYPES]
# Log-parameters are kept within e**±20: wide enough for any real fit, narrow enough that the
# likelihood stays finite when a degenerate data set pushes a parameter towards 0 or infinity.
_LOG_BOUND = 20.0


class BgNbd:
    """The BG/NBD model of Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way".

    A customer's transactions follow a Poisson process of rate λ ~ Gamma(r, α) (α a rate, so in
    the time unit of the inputs); after each repeat transaction the customer drops out for good
    with probability p ~ Beta(a, b). A customer is summarised by x (repeat transactions), t_x (time
    of the last one since the first transaction) and T (time from the first transaction to now),
    all in one time unit; the fitted α is in that unit.

    With B = Beta function, the likelihood of one customer is (FHL 2005, eq. 6)

        L(x, t_x, T) = Γ(r+x) α^r / Γ(r) · [ B(a, b+x)/B(a, b) · (α+T)^-(r+x)
                                             + [x>0] · B(a+1, b+x-1)/B(a, b) · (α+t_x)^-(r+x) ],

    where the first term is "still alive at T" and the second "dropped out right after t_x".
    Hence P(alive at T) is the first term's share (B(a+1, b+x-1)/B(a, b+x) = a/(b+x-1)):

        P_alive = 1 / (1 + [x>0] · a/(b+x-1) · ((α+T)/(α+t_x))^(r+x)).

    No transaction in (T, T+h] is the same history observed for longer, so
    P(none in (T, T+h]) = L(x, t_x, T+h) / L(x, t_x, T); only the alive term depends on T, so

        P(none in (T, T+h]) = (1 - P_alive) + P_alive · ((α+T)/(α+T+h))^(r+x).

    The same follows from the posterior: a live customer's λ is Gamma(r+x, α+T) and a live customer
    cannot drop out without transacting, so P(no arrival in h | alive) = E[e^(-λh)] = that power.
    """

    def __init__(self) -> None:
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = float("nan")

    def fit(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BgNbd:
        """Fit (r, α, a, b) by maximum likelihood and return self; sets `params_` and `log_likelihood_`."""
        x, t_x, T, scale = fit_inputs(x, t_x, T, "BG/NBD")
        result = minimize(
            _negative_log_likelihood,
            x0=np.zeros(4),
            args=(x, t_x * scale, T * scale),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
            options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 1000},
        )
        # `result.success` is not consulted: where dropout is nearly the same for everyone, a and b grow
        # together along a flat ridge and L-BFGS-B ends with an "abnormal" line search at the optimum.
        r, alpha, a, b = np.exp(result.x)
        self.params_ = {"r": float(r), "alpha": float(alpha / scale), "a": float(a), "b": float(b)}
        self.log_likelihood_ = float(np.sum(_terms(*self._params(), x, t_x, T)[0]))
        return self

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Return each customer's probability of still being alive at T (1 when x = 0)."""
        x, t_x, T = checked_inputs(x, t_x, T)
        r, alpha, a, b = self._params()
        repeat = x > 0
        log_odds_dead = (
            np.log(a) - np.log(b + np.maximum(x, 1.0) - 1.0) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        return np.where(repeat, expit(-log_odds_dead), 1.0)

    def p_no_event(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon_days: float) -> np.ndarray:
        """Return each customer's probability of no transaction in (T, T + horizon_days], in the inputs' unit."""
        x, t_x, T = checked_inputs(x, t_x, T)
        r, alpha, _, _ = self._params()
        # 1 - ((α+T)/(α+T+h))^(r+x) via expm1/log1p: exact even when it is tiny (short h, slow users).
        p_event_if_alive = -np.expm1(-(r + x) * np.log1p(horizon_days / (alpha + T)))
        return np.clip(1.0 - self.p_alive(x, t_x, T) * p_event_if_alive, 0.0, 1.0)

    def _params(self) -> tuple[float, float, float, float]:
        if not self.params_:
            raise InputError("BG/NBD model is not fitted")
        p = self.params_
        return p["r"], p["alpha"], p["a"], p["b"]


def _terms(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return (log-likelihoods, share of the dropped-out term) per customer."""
    repeat = x > 0
    x1 = np.maximum(x, 1.0)  # keeps B(a+1, b+x-1) defined where the term is masked out anyway
    alive = betaln(a, b + x) - (r + x) * np.log(alpha + T)
    dropped = np.where(repeat, betaln(a + 1.0, b + x1 - 1.0) - (r + x) * np.log(alpha + t_x), -np.inf)
    top = np.maximum(alive, dropped)
    log_sum = top + np.log(np.exp(alive - top) + np.exp(dropped - top))
    ll = gammaln(r + x) - gammaln(r) + r * np.log(alpha) - betaln(a, b) + log_sum
    return ll, np.exp(dropped - log_sum)


def _negative_log_likelihood(
    theta: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[float, np.ndarray]:
    """Return the mean negative log-likelihood and its gradient in log-parameters."""
    r, alpha, a, b = np.exp(theta)
    ll, w = _terms(r, alpha, a, b, x, t_x, T)
    v = 1.0 - w  # share of the alive term
    repeat = x > 0
    x1 = np.maximum(x, 1.0)
    d_r = digamma(r + x) - digamma(r) + np.log(alpha) - v * np.log(alpha + T) - w * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (v / (alpha + T) + w / (alpha + t_x))
    psi_ab, psi_abx = digamma(a + b), digamma(a + b + x)
    d_a = psi_ab - psi_abx + w / a
    d_b = psi_ab - psi_abx - digamma(b) + v * digamma(b + x) + w * np.where(repeat, digamma(b + x1 - 1.0), 0.0)
    grad = -np.array([d_r.mean() * r, d_alpha.mean() * alpha, d_a.mean() * a, d_b.mean() * b])
    return float(-ll.mean()), grad


def btyd_inputs(values: np.ndarray, as_of: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return BG/NBD's (x, t_x, T) in days from state rows: every event of any type is a transaction.

    x is the count of all events less the first, t_x the days from first to last event and T the
    days from the first event to `as_of`. A user without events counts as one who just arrived.
    """
    count = values[:, _COUNT_COLS].sum(axis=1)
    first, last = values[:, col("first_seen")], values[:, col("last_seen")]
    seen = count > 0
    if np.any(last[seen] > as_of):
        raise InputError("state rows hold events after the as-of time")
    first = np.where(seen, first, as_of)
    last = np.where(seen, last, as_of)
    x = np.maximum(count - 1.0, 0.0)
    return x, (last - first) / SECONDS_PER_DAY, (as_of - first) / SECONDS_PER_DAY


def btyd_from_features(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return BG/NBD inputs (x repeat events, t_x and T in days) from feature rows."""
    T = np.maximum(X[:, _TENURE], 1e-3)
    x = np.maximum(np.round(np.expm1(X[:, _EVENTS])) - 1.0, 0.0)
    t_x = np.where(x > 0, np.clip(T - X[:, _RECENCY], 0.0, T), 0.0)
    return x, t_x, T


PARETO_FIT_ROWS = 10_000


def pareto_fit_rows(n: int) -> np.ndarray:
    """Return the rows, of `n`, that a Pareto/NBD is fitted on: all of them, or a fixed random PARETO_FIT_ROWS.

    Its likelihood costs a 2F1 series per customer, and four parameters are pinned down long before that many.
    """
    if n <= PARETO_FIT_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, PARETO_FIT_ROWS, replace=False))


@dataclass(frozen=True)
class BtydFit:
    """BG/NBD and Pareto/NBD fitted once on a set of feature rows, for every pipeline that learns from those rows.

    Both fits are unsupervised, so they are the same whatever classifier, calibration fold or candidate follows:
    training fits them once per set of rows and hands them to each pipeline (Pareto/NBD's fit is the expensive
    part of a pipeline's fit). None stands for a model with no finite fit on the rows (say, every user seen once).
    """

    bgnbd: BgNbd | None
    paretonbd: ParetoNbd | None

    @classmethod
    def on(cls, X: Any) -> BtydFit:
        """Fit both models on feature rows X."""
        return cls(finite_fit(BgNbd, X), finite_fit(ParetoNbd, X))


def finite_fit(model: type[BgNbd] | type[ParetoNbd], X: Any) -> BgNbd | ParetoNbd | None:
    """Return `model` fitted on feature rows X (Pareto/NBD on `pareto_fit_rows` of them), or None where no fit
    is finite."""
    x, t_x, T = btyd_from_features(np.asarray(X, dtype=np.float64))
    if model is ParetoNbd:
        rows = pareto_fit_rows(x.size)
        x, t_x, T = x[rows], t_x[rows], T[rows]
    fitted = model().fit(x, t_x, T)
    return fitted if np.isfinite(fitted.log_likelihood_) else None


class BtydFeatures(BaseEstimator, TransformerMixin):
    """Appends what BG/NBD and Pareto/NBD say of each user to the feature rows.

    BG/NBD gives P(alive) and P(no event in `horizon_days`); Pareto/NBD the same two and the expected events in the
    horizon (as log1p). Both are fitted on the training rows without labels, so they carry what pure transaction
    timing says into the model, and being parametric they hold where a tree cannot reach: at tenures and silences
    longer than any in training. `fitted`, when given, is a BtydFit of the same rows made once for several
    pipelines; `fit` then takes it instead of fitting again.
    """

    # The feature columns `transform` reads (btyd_from_features); it copies every column unchanged before its own.
    INPUTS = (_EVENTS, _TENURE, _RECENCY)
    COLUMNS = (
        "bg_nbd_p_alive",
        "bg_nbd_p_no_event",
        "pareto_nbd_p_alive",
        "pareto_nbd_p_no_event",
        "pareto_nbd_log_events",
    )

    # What a model pickled before `fitted` existed reads back (scikit-learn's get_params asks for every argument).
    fitted: BtydFit | None = None

    def __init__(self, horizon_days: float = 30.0, fitted: BtydFit | None = None) -> None:
        self.horizon_days = horizon_days
        self.fitted = fitted

    def fit(self, X: np.ndarray, y: Any = None) -> BtydFeatures:
        """Fit BG/NBD and Pareto/NBD on the training rows (unsupervised), or take `fitted`."""
        # A degenerate log (say, every user seen once) gives no usable fit: the columns are then constant.
        fit = self.fitted if self.fitted is not None else BtydFit.on(X)
        self.bgnbd_, self.paretonbd_ = fit.bgnbd, fit.paretonbd
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Return X with len(COLUMNS) more columns, in COLUMNS order."""
        X = np.asarray(X, dtype=np.float64)
        n = len(X)
        x, t_x, T = btyd_from_features(X)
        if self.bgnbd_ is None:
            bg = [np.ones(n), np.full(n, 0.5)]
        else:
            bg = [self.bgnbd_.p_alive(x, t_x, T), self.bgnbd_.p_no_event(x, t_x, T, self.horizon_days)]
        if self.paretonbd_ is None:
            pareto = [np.ones(n), np.full(n, 0.5), np.zeros(n)]
        else:
            alive, none, expected = self.paretonbd_.horizon_view(x, t_x, T, self.horizon_days)
            pareto = [alive, none, np.log1p(expected)]
        return np.column_stack([X, *bg, *pareto])
