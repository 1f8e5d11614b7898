"""Buy-till-you-die: the Pareto/NBD model, BG/NBD's elder, whose customers may drop out at any moment.

BG/NBD (btyd.py) lets a customer drop out only right after a transaction; Pareto/NBD lets them drop out at any
time, which fits logs where users fall silent between purchases. Both read the same summary of a customer: x
(repeat transactions), t_x (time of the last since the first) and T (time from the first to now).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln, gammasgn, hyp2f1, logsumexp

from chalicelib.errors import InputError
from chalicelib.scoring.btyd_summary import checked_inputs, fit_inputs

# Log-parameters are kept within e**±20, as for BG/NBD: finite likelihoods whatever a degenerate log does.
_LOG_BOUND = 20.0


class ParetoNbd:
    """The Pareto/NBD model of Schmittlein, Morrison & Colombo (1987), as Fader & Hardie (2005) derive it.

    While alive, a customer transacts as a Poisson process of rate λ ~ Gamma(r, α); their lifetime is
    exponential with rate μ ~ Gamma(s, β), independent of λ (α and β are rates in the time unit of the inputs).
    With a = r + s + x, the likelihood of one customer is (Fader & Hardie 2005, "A Note on Deriving the
    Pareto/NBD Model and Related Expressions", eq. 18-20)

        L(x, t_x, T) = Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^-(r+x) (β+T)^-s + s/a · A0 ],

        A0 = F(t_x) - F(T),  F(t) = 2F1(a, b; a+1; |α-β| / (m+t)) / (m+t)^a,

    where m = max(α, β) and b = s+1 when α ≥ β, else b = r+x. The first term is "alive at T", the second
    "died in (t_x, T]". So P(alive at T) is the first term's share of the bracket, and, as no transaction in
    (T, T+h] is the same history observed for longer, P(none in (T, T+h]) = L(x, t_x, T+h) / L(x, t_x, T).
    """

    def __init__(self) -> None:
        self.params_: dict[str, float] = {}
        self.log_likelihood_: float = float("nan")

    def fit(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> ParetoNbd:
        """Fit (r, α, s, β) by maximum likelihood and return self; sets `params_` and `log_likelihood_`."""
        x, t_x, T, scale = fit_inputs(x, t_x, T, "Pareto/NBD")
        xs, ts, Ts = x, t_x * scale, T * scale

        def objective(theta: np.ndarray) -> float:
            # The optimiser may try parameters where the likelihood is not finite: those only lose.
            with np.errstate(all="ignore"):
                value = -float(np.mean(_log_likelihood(*np.exp(theta), xs, ts, Ts)))
            return value if np.isfinite(value) else 1e300

        result = minimize(
            objective,
            x0=np.zeros(4),
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
            # Where dropout is nearly the same for everyone, s and β grow together along a flat ridge, each step
            # dearer than the last (2F1's series lengthens with s). Tighter tolerances walked it for 700
            # likelihoods and 66 s on 8,400 users, to gain 0.003 of log-likelihood; these stop at 225 and 13 s.
            options={"ftol": 1e-10, "gtol": 1e-6, "maxiter": 2000},
        )
        r, alpha, s, beta = np.exp(result.x)
        self.params_ = {"r": float(r), "alpha": float(alpha / scale), "s": float(s), "beta": float(beta / scale)}
        self.log_likelihood_ = float(np.sum(self.log_likelihood(x, t_x, T)))
        return self

    def log_likelihood(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Return each customer's log-likelihood under the fitted parameters."""
        x, t_x, T = checked_inputs(x, t_x, T)
        return _log_likelihood(*self._params(), x, t_x, T)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Return each customer's probability of still being alive at T."""
        x, t_x, T = checked_inputs(x, t_x, T)
        params = self._params()
        return np.exp(_log_alive_term(*params, x, T) - _log_bracket(*params, x, t_x, T))

    def p_no_event(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon: float) -> np.ndarray:
        """Return each customer's probability of no transaction in (T, T + horizon], in the inputs' unit."""
        return self.horizon_view(x, t_x, T, horizon)[1]

    def expected_events(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon: float) -> np.ndarray:
        """Return each customer's expected number of transactions in (T, T + horizon] (Fader & Hardie eq. 41)."""
        return self.horizon_view(x, t_x, T, horizon)[2]

    def horizon_view(
        self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (P(alive at T), P(no transaction in (T, T+h]), expected transactions in (T, T+h]) per customer.

        One pass: 2F1 is the cost (a series per customer), and the three share its values at t_x, T and T+h.
        The expectation is eq. 41, E = P(alive) · (r+x)(β+T) / (α+T) · [1 - ((β+T)/(β+T+h))^(s-1)] / (s-1), whose
        last factor tends to log((β+T+h)/(β+T)) as s tends to 1.
        """
        x, t_x, T = checked_inputs(x, t_x, T)
        params = self._params()
        r, alpha, s, beta = params
        at_tx, at_T, at_end = (_log_f(*params, x, t) for t in (t_x, T, T + horizon))
        now = _log_bracket_of(*params, x, T, at_tx, at_T)
        later = _log_bracket_of(*params, x, T + horizon, at_tx, at_end)
        alive = np.exp(_log_alive_term(*params, x, T) - now)
        span = np.log1p(horizon / (beta + T))
        k = s - 1.0
        remaining = span if abs(k) < 1e-9 else -np.expm1(-k * span) / k
        expected = alive * (r + x) * (beta + T) / (alpha + T) * remaining
        return alive, np.clip(np.exp(later - now), 0.0, 1.0), expected

    def _params(self) -> tuple[float, float, float, float]:
        if not self.params_:
            raise InputError("Pareto/NBD model is not fitted")
        p = self.params_
        return p["r"], p["alpha"], p["s"], p["beta"]


def _log_alive_term(r: float, alpha: float, s: float, beta: float, x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Return log of (α+T)^-(r+x) (β+T)^-s: the bracket's "alive at T" term."""
    return -(r + x) * np.log(alpha + T) - s * np.log(beta + T)


def _log_f(r: float, alpha: float, s: float, beta: float, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Return log F(t) = log(2F1(a, b; a+1; |α-β| / (m+t)) / (m+t)^a), of which A0 = F(t_x) - F(T).

    2F1 is taken through Euler's transformation, 2F1(a, b; c; z) = (1-z)^(c-a-b) 2F1(c-a, c-b; c; z): with c = a+1
    the right-hand series is 2F1(1, c-b; a+1; z), whose terms shrink for every z < 1. The left-hand one grows
    like (1-z)^(c-a-b) as z nears 1 (one rate far above the other), which overflows long before the log does.
    """
    a = r + s + x
    if alpha >= beta:
        top, low, b = alpha, beta, s + 1.0
    else:
        top, low, b = beta, alpha, r + x
    log_near, log_far = np.log(low + t), np.log(top + t)
    log_series = _log_euler_series(a + 1.0 - b, a + 1.0, (top - low) / (top + t), log_near - log_far)
    # log(1 - z) = log((low + t) / (top + t)); the power is c - a - b = 1 - b
    return log_series + (1.0 - b) * (log_near - log_far) - a * log_far


# Where 1 - z is this small, also against the series' second parameter, and its c - a - b this far from an integer,
# the series is summed around z = 1 (`_log_series_near_one`) instead of by scipy, which takes ~10 µs an evaluation
# there.
_NEAR_ONE = 0.5
_NEAR_ONE_Y = 0.1
_OFF_INTEGER = 0.02
_NEAR_ONE_TERMS = 80


def near_one(B: np.ndarray, D: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return where 2F1(1, B; C; 1 - y), D = C - 1 - B, is summed around z = 1 rather than left to scipy."""
    return (y * np.maximum(B, 1.0) < _NEAR_ONE) & (y < _NEAR_ONE_Y) & (np.abs(D - np.round(D)) > _OFF_INTEGER)


def _log_euler_series(B: np.ndarray, C: np.ndarray, z: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Return log 2F1(1, B; C; z), given log(1 - z) as `log_y` (exact where z rounds to 1)."""
    B, C, z, log_y = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (B, C, z, log_y)))
    D = C - 1.0 - B
    y = np.exp(log_y)
    near = near_one(B, D, y)
    out = np.full(z.shape, np.nan)
    out[near] = _log_series_near_one(B[near], C[near], D[near], log_y[near])
    rest = ~np.isfinite(out)  # the rows not near 1, and any whose series did not settle in _NEAR_ONE_TERMS terms
    # Near 1 with a large B, scipy loses up to 1e-5 of the log where D is nearly an integer and overflows to NaN
    # where B y passes ~0.5; quadrature keeps to 1e-11 there (checked against mpmath).
    integral = rest & (B >= _INTEGRAL_B) & (y < _NEAR_ONE_Y)
    scipy_rows = rest & ~integral
    with np.errstate(divide="ignore", invalid="ignore"):
        out[scipy_rows] = np.log(hyp2f1(1.0, B[scipy_rows], C[scipy_rows], z[scipy_rows]))
    integral |= scipy_rows & ~np.isfinite(out)  # and wherever else scipy fails
    rows = np.flatnonzero(integral)
    for block in np.array_split(rows, -(-rows.size // _INTEGRAL_BLOCK)) if rows.size else ():
        out[block] = _log_integral(B[block], C[block], log_y[block])  # in blocks: 240 nodes a row, kept in cache
    return out


# From this B on, rows near 1 that the series does not take go to quadrature rather than scipy, this many at a time.
_INTEGRAL_B = 20.0
_INTEGRAL_BLOCK = 512


# Gauss-Legendre nodes of each of `_log_integral`'s five panels.
_PANEL_X, _PANEL_W = np.polynomial.legendre.leggauss(48)
# How far below the bend the left panel reaches, in units of 1 / (C - 1): the integrand has fallen by e^-30 or more.
_LEFT_REACH = 60.0
# How far the log of the integrand falls across the last panel, at least: what lies beyond weighs e^-40 of it.
_LAST_FALL = 40.0


def _log_integral(B: np.ndarray, C: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Return log 2F1(1, B; C; 1 - y) by quadrature of Euler's integral, for any B > 0, C > 1 and y < 1/2.

    2F1(1, B; C; z) = (C-1) ∫ u^(C-2) (y + (1-y)u)^-B du over (0, 1); with u = e^v that is (C-1) ∫ e^g(v) dv over
    v < 0, g(v) = (C-1)v - B log(y + (1-y)e^v), summed in logs, so nothing overflows. g is concave: its slope falls
    from C - 1, far below the bend v0 = log(y / (1-y)), to D + B y at 0 (D = C-1-B). The panels follow that shape:
    below v0, where g falls at about C - 1; from v0 to g's peak, where the slope crosses 0 (when it does before 0);
    from there to where the last stretch begins, in which g falls by 40 or less at the slope it has at 0 (a steep
    rise there, when D + B y is large, holds all the mass); and that stretch. Checked against mpmath's quadrature at
    30 digits to 1e-10 and better for B up to 1e5, D up to 1e4, y down to 1e-15; ~10 µs a row, as scipy near 1.
    """
    y = np.exp(log_y)
    rise = C - 1.0
    log_rest = np.log1p(-y)
    bend = np.minimum(log_y - log_rest, 0.0)
    end_slope = rise - B * (1.0 - y)  # = D + B y
    # Where the slope crosses 0 before v = 0: (1-y)e^v / (y + (1-y)e^v) = (C-1) / B.
    with np.errstate(divide="ignore", invalid="ignore"):
        share = rise / B
        peak = np.where(end_slope < 0.0, np.log(share) + log_y - log_rest - np.log1p(-share), bend)
    peak = np.clip(peak, bend, 0.0)
    steep = np.maximum(peak, -_LAST_FALL / np.maximum(end_slope, 1.0))
    shoulder = np.minimum(bend + np.log1p(B), 0.0)  # where B (1 - share of e^v) falls to about 1
    edges = [bend - _LEFT_REACH / rise, bend, shoulder, peak, steep, np.zeros_like(bend)]
    edges = np.sort(np.stack(edges, 1), axis=1)
    half = (edges[:, 1:] - edges[:, :-1]) / 2.0
    v = (edges[:, 1:] + edges[:, :-1])[:, :, None] / 2.0 + half[:, :, None] * _PANEL_X
    log_integrand = rise[:, None, None] * v - B[:, None, None] * np.logaddexp(
        log_y[:, None, None], log_rest[:, None, None] + v
    )
    with np.errstate(divide="ignore"):  # an empty panel (two edges equal) weighs log 0
        log_weight = np.log(half)[:, :, None] + np.log(_PANEL_W)
    return np.log(rise) + logsumexp((log_integrand + log_weight).reshape(B.size, -1), axis=1)


def _log_series_near_one(B: np.ndarray, C: np.ndarray, D: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """Return log 2F1(1, B; C; z) for z near 1 (y = 1 - z small), with D = C - 1 - B not an integer.

    The connection formula to 1 - z (Abramowitz & Stegun 15.3.6) with a = 1 gives two terms. The first is
    (C-1)/D · 2F1(1, B; 1-D; y), whose series shrinks by about B·y a term. The second is
    y^D Γ(C) Γ(-D) / Γ(B) · 2F1(C-1, D+1; D+1; y), and that series is (1 - y)^-(C-1) = z^-(C-1) in closed form.
    """
    y = np.exp(log_y)
    term = np.ones_like(y)  # the series' k-th term; rows whose terms do not settle come back NaN
    series = np.ones_like(y)
    for k in range(_NEAR_ONE_TERMS):
        term = term * (B + k) / (1.0 - D + k) * y
        series += term
        if np.all(np.abs(term) <= 1e-17 * np.abs(series)):
            break
    first = (C - 1.0) / D * series
    log_z = np.log1p(-y)
    log_second = D * log_y + gammaln(C) + gammaln(-D) - gammaln(B) - (C - 1.0) * log_z
    settled = np.abs(term) <= 1e-16 * np.abs(series)
    with np.errstate(invalid="ignore"):
        return np.where(settled, np.log(first + gammasgn(-D) * np.exp(log_second)), np.nan)


def _log_bracket_of(
    r: float, alpha: float, s: float, beta: float, x: np.ndarray, T: np.ndarray, at_tx: np.ndarray, at_T: np.ndarray
) -> np.ndarray:
    """Return log of the likelihood's bracket, the alive term plus s/(r+s+x) · A0, from log F at t_x and at T.

    A0 is F(t_x) - F(T), -inf where t_x = T (no time in which to have died); F falls as t grows, so the log of the
    difference is taken without the cancellation of a difference.
    """
    with np.errstate(divide="ignore"):
        log_a0 = at_tx + np.log(-np.expm1(np.minimum(at_T - at_tx, 0.0)))
    died = np.log(s) - np.log(r + s + x) + log_a0
    return np.logaddexp(_log_alive_term(r, alpha, s, beta, x, T), died)


def _log_bracket(
    r: float, alpha: float, s: float, beta: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Return log of the likelihood's bracket at T."""
    at_tx, at_T = _log_f(r, alpha, s, beta, x, t_x), _log_f(r, alpha, s, beta, x, T)
    return _log_bracket_of(r, alpha, s, beta, x, T, at_tx, at_T)


def _log_likelihood(
    r: float, alpha: float, s: float, beta: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Return each customer's log-likelihood (eq. 18)."""
    head = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    return head + _log_bracket(r, alpha, s, beta, x, t_x, T)
