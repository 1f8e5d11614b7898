"""Pareto/NBD against the published CDNOW fit and against lifetimes, the reference implementation (dev only)."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.errors import InputError
from chalicelib.scoring.pareto_nbd import ParetoNbd
from tests.cdnow import cdnow_summary, lifetimes

ParetoNBDFitter = lifetimes.ParetoNBDFitter

# Fader & Hardie (2005), "A Note on Deriving the Pareto/NBD Model and Related Expressions", on the 2,357 CDNOW
# customers, time in weeks (the values Schmittlein, Morrison & Colombo's model gives that data set).
PUBLISHED = {"r": 0.5534, "alpha": 10.5776, "s": 0.6061, "beta": 11.6650}
PUBLISHED_LOG_LIKELIHOOD = -9594.98


@pytest.fixture(scope="module")
def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cdnow_summary()


@pytest.fixture(scope="module")
def fitted(cdnow) -> ParetoNbd:
    return ParetoNbd().fit(*cdnow)


def reference_with(params: dict[str, float]) -> ParetoNBDFitter:
    """Return lifetimes' Pareto/NBD holding `params`, to compare expressions at the very same parameters."""
    import pandas as pd

    reference = ParetoNBDFitter()
    reference.params_ = pd.Series(params)
    return reference


def test_the_fit_matches_the_published_cdnow_parameters_and_log_likelihood(fitted):
    # Given the CDNOW summary, when our Pareto/NBD fits it, then it finds the paper's parameters and likelihood
    for name, value in PUBLISHED.items():
        assert fitted.params_[name] == pytest.approx(value, rel=2e-3), name
    assert fitted.log_likelihood_ == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.05)


@pytest.mark.slow  # lifetimes' own fit takes about 10 s
def test_the_fit_matches_lifetimes_own_fit(cdnow, fitted):
    reference = ParetoNBDFitter().fit(*cdnow).params_.to_dict()
    for name in PUBLISHED:
        assert fitted.params_[name] == pytest.approx(reference[name], rel=1e-3), name


@pytest.mark.parametrize(
    "params",
    [
        {"r": 0.5534, "alpha": 10.5776, "s": 0.6061, "beta": 11.6650},  # α < β: the 2F1(a, r+x; …) branch
        {"r": 1.3, "alpha": 20.0, "s": 0.4, "beta": 3.0},  # α > β: the 2F1(a, s+1; …) branch
        {"r": 0.8, "alpha": 5.0, "s": 1.0, "beta": 5.0},  # α = β (z = 0) and s = 1 (the expectation's limit)
    ],
)
def test_each_expression_equals_lifetimes_at_the_same_parameters(cdnow, params):
    # Given a varied sample of CDNOW customers and one set of parameters for both implementations
    x, t_x, T = (v[::25] for v in cdnow)
    ours = ParetoNbd()
    ours.params_ = dict(params)
    reference = reference_with(params)
    # Then the likelihood, P(alive), the expected events and P(no event) agree to rounding
    theirs = reference._conditional_log_likelihood(tuple(params.values()), x, t_x, T)
    np.testing.assert_allclose(ours.log_likelihood(x, t_x, T), theirs, rtol=1e-9)
    np.testing.assert_allclose(ours.p_alive(x, t_x, T), reference.conditional_probability_alive(x, t_x, T), rtol=1e-9)
    if params["s"] != 1.0:  # lifetimes divides by s - 1
        expected = reference.conditional_expected_number_of_purchases_up_to_time(39.0, x, t_x, T)
        np.testing.assert_allclose(ours.expected_events(x, t_x, T, 39.0), expected, rtol=1e-8)
    none = [reference.conditional_probability_of_n_purchases_up_to_time(0, 39.0, *c) for c in zip(x, t_x, T)]
    np.testing.assert_allclose(ours.p_no_event(x, t_x, T, 39.0), none, rtol=1e-8, atol=1e-12)


def test_the_expectation_at_s_equal_to_1_is_the_limit_of_its_neighbours():
    x, t_x, T = np.array([3.0]), np.array([10.0]), np.array([20.0])
    at = {}
    for s in (1.0 - 1e-6, 1.0, 1.0 + 1e-6):
        model = ParetoNbd()
        model.params_ = {"r": 0.8, "alpha": 5.0, "s": s, "beta": 5.0}
        at[s] = float(model.expected_events(x, t_x, T, 26.0)[0])
    assert at[1.0] == pytest.approx(at[1.0 - 1e-6], rel=1e-5) == pytest.approx(at[1.0 + 1e-6], rel=1e-5)


def test_a_customer_who_just_transacted_is_alive_and_silence_lowers_it(fitted):
    # x repeat purchases, the last one now (t_x = T): no time in which to have died
    x = np.array([4.0, 4.0, 4.0])
    t_x = np.array([30.0, 30.0, 30.0])
    T = np.array([30.0, 40.0, 60.0])
    alive = fitted.p_alive(x, t_x, T)
    assert alive[0] == pytest.approx(1.0)
    assert alive[0] > alive[1] > alive[2] > 0
    # and the longer the horizon, the likelier a purchase in it
    quiet = [float(fitted.p_no_event(x[1:2], t_x[1:2], T[1:2], h)[0]) for h in (1.0, 10.0, 100.0)]
    assert 1 > quiet[0] > quiet[1] > quiet[2] > 0


def test_recovers_the_parameters_of_logs_it_generated():
    # Given 10,000 customers drawn from a Pareto/NBD of known parameters, each watched for a year
    rng = np.random.default_rng(5)
    true = {"r": 0.9, "alpha": 8.0, "s": 0.7, "beta": 12.0}
    n, T = 10_000, 52.0
    lam = rng.gamma(true["r"], 1 / true["alpha"], n)
    mu = rng.gamma(true["s"], 1 / true["beta"], n)
    life = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * life).astype(float)
    # the last of x uniform arrivals in (0, life): the largest of x uniforms
    t_x = np.where(x > 0, life * rng.random(n) ** (1 / np.maximum(x, 1)), 0.0)
    # When our Pareto/NBD fits them, then it finds the parameters back within sampling error
    fitted = ParetoNbd().fit(x, t_x, np.full(n, T)).params_
    for name, value in true.items():
        assert fitted[name] == pytest.approx(value, rel=0.2), name


def test_refuses_bad_input_and_an_unfitted_model():
    with pytest.raises(InputError):
        ParetoNbd().fit(np.array([]), np.array([]), np.array([]))
    with pytest.raises(InputError):
        ParetoNbd().fit(np.array([1.0]), np.array([5.0]), np.array([3.0]))  # last purchase after now
    with pytest.raises(InputError):
        ParetoNbd().p_alive(np.array([1.0]), np.array([1.0]), np.array([2.0]))


def test_one_rate_far_above_the_other_stays_finite_for_heavy_buyers():
    # GIVEN parameters a small training set really gave (dropout rates spread far wider than purchase rates)
    model = ParetoNbd()
    model.params_ = {"r": 1.13, "alpha": 6.77, "s": 35.5, "beta": 13682.0}
    x = np.array([0.0, 5.0, 60.0, 200.0, 200.0])
    t_x = np.array([0.0, 40.0, 90.0, 119.0, 30.0])
    T = np.full(5, 120.0)
    # THEN every probability is a probability (2F1 near z = 1 overflowed before Euler's transformation)
    for p in (model.p_alive(x, t_x, T), model.p_no_event(x, t_x, T, 30.0)):
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.isfinite(model.log_likelihood(x, t_x, T)))


def _cases(rng: np.random.Generator, n: int) -> list[tuple[float, float, float, float]]:
    """Return (B, C, low + t, top + t) of 2F1(1, B; C; z), z = 1 - (low + t)/(top + t), as Pareto/NBD makes them."""
    cases = []
    for _ in range(n):
        r, s = rng.uniform(0.05, 5.0), 10 ** rng.uniform(-1.5, 2.5)
        x = float(rng.integers(0, 300) if rng.random() < 0.7 else rng.integers(0, 5))
        low, top = sorted((10 ** rng.uniform(-1, 3), 10 ** rng.uniform(-1, 6)))
        b = r + x if rng.random() < 0.7 else s + 1.0  # β above α, or α above β
        t = rng.uniform(0.0, 1000.0)
        cases.append((r + s + x + 1.0 - b, r + s + x + 1.0, low + t, top + t))
    return cases


def test_the_series_near_z_1_is_2f1_to_the_last_digits_where_scipy_is_slow_or_overflows():
    import mpmath

    from chalicelib.scoring import pareto_nbd

    # GIVEN 2F1's arguments as Pareto/NBD's customers make them, most of them near z = 1, and some where
    # c - a - b is an integer or nearly (left to scipy) or below zero (x = 0, r < 1)
    rng = np.random.default_rng(11)
    edges = [(63.4, 64.9, 6.3, 73220.0), (63.4, 64.4 + 1e-3, 6.3, 73220.0), (2.0, 2.5, 1.0, 5e4)]
    cases = [*_cases(rng, 400), *edges]
    B, C, near, far = (np.array(column) for column in zip(*cases, strict=True))
    # WHEN the series is taken as training and scoring take it
    got = pareto_nbd._log_euler_series(B, C, (far - near) / far, np.log(near) - np.log(far))
    # THEN it is mpmath's at 40 digits within 1e-12 (relative to the log, or absolute below 1)
    mpmath.mp.dps = 40
    want = np.array(
        [float(mpmath.log(mpmath.hyp2f1(1, b, c, 1 - mpmath.mpf(lo) / mpmath.mpf(hi)))) for b, c, lo, hi in cases]
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # AND most of these cases took the series near 1, not scipy
    assert np.mean(pareto_nbd.near_one(B, C - 1.0 - B, near / far)) > 0.2


def _mp_log_euler_integral(b: float, c: float, y: float) -> float:
    """Return log 2F1(1, b; c; 1 - y) from Euler's integral by mpmath's own quadrature (tanh-sinh) at 20 digits.

    mpmath's hyp2f1 gives up (or returns a complex) for some of the cases below; its quadrature of the integral,
    in v = log u and split where the integrand bends, peaks and falls off, does not.
    """
    import mpmath

    mpmath.mp.dps = 20
    b, c, y = mpmath.mpf(b), mpmath.mpf(c), mpmath.mpf(y)

    def log_integrand(v):
        return (c - 1) * v - b * mpmath.log(y + (1 - y) * mpmath.exp(v))

    share = (c - 1) / b
    peak = mpmath.log(share * y / ((1 - y) * (1 - share))) if share < 1 - y else mpmath.mpf(0)
    top = log_integrand(peak)
    bend, fall = mpmath.log(y / (1 - y)), max(c - 1 - b * (1 - y), 1)
    points = {peak, bend, mpmath.mpf(0), bend - 200 / (c - 1)}
    points |= {p for k in (1, 5, 20, 60) for p in (-k / fall, bend - k / (c - 1), peak - k / (c - 1))}
    points = sorted(p for p in points if bend - 200 / (c - 1) <= p <= 0)
    area = mpmath.quad(lambda v: mpmath.exp(log_integrand(v) - top), points)
    return float(mpmath.log(c - 1) + top + mpmath.log(area))


def test_2f1_near_z_1_with_a_large_b_is_mpmaths_where_scipy_drifts_or_overflows():
    from chalicelib.scoring import pareto_nbd

    # GIVEN 2F1(1, B; C; 1 - y) with B >= 20 and y < 0.1, which the series near 1 does not take: c - a - b within
    # 0.02 of an integer (where scipy loses up to 1e-5 of the log), B y from 0.5 to 500 (where scipy overflows,
    # and the integrand's mass gathers in a sliver next to u = 1), and y down to 1e-15
    rng = np.random.default_rng(5)
    B = 10 ** rng.uniform(np.log10(20.0), 4.0, 120)
    D = np.where(rng.random(120) < 0.5, np.round(rng.uniform(-1, 400, 120)) + rng.uniform(-0.02, 0.02, 120), 0.0)
    D = np.where(D == 0.0, rng.uniform(-0.99, 400, 120), np.maximum(D, -0.99))
    y = np.minimum(10 ** rng.uniform(np.log10(0.5), np.log10(500.0), 120) / B, 0.099)
    y[:20] = 10 ** rng.uniform(-15, -6, 20)
    C = B + 1.0 + D
    # WHEN the series is taken as training and scoring take it
    got = pareto_nbd._log_euler_series(B, C, 1.0 - y, np.log(y))
    # THEN it is mpmath's within 1e-10 (relative to the log, or absolute below 1)
    want = np.array([_mp_log_euler_integral(b, c, v) for b, c, v in zip(B, C, y, strict=True)])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # AND mpmath's quadrature is mpmath's hyp2f1 wherever that one answers
    import mpmath

    mpmath.mp.dps = 40
    answered = 0
    for b, c, v, w in list(zip(B, C, y, want, strict=True))[20:40]:
        value = mpmath.hyp2f1(1, mpmath.mpf(b), mpmath.mpf(c), 1 - mpmath.mpf(v))
        if mpmath.im(value) == 0 and value > 0:
            answered += 1
            assert abs(float(mpmath.log(value)) - w) <= 1e-10 * max(1.0, abs(w))
    assert answered >= 15


def test_long_tenure_with_few_events_has_a_probability_on_a_dropout_ridge():
    # GIVEN the committed model's Pareto/NBD (its fit ran along the ridge where everyone drops out at about the same
    # rate: s and β both large), where 2F1 once overflowed to NaN for tenures past ~553 days and five events or fewer
    model = ParetoNbd()
    model.params_ = {"r": 0.9254, "alpha": 6.3107, "s": 398.555, "beta": 470215.0}
    T = np.repeat(np.linspace(560.0, 730.0, 171), 6)
    x = np.tile(np.arange(6.0), 171)
    t_x = np.where(x > 0, T * 0.4, 0.0)
    # WHEN it reads every such user, as the schedule does over the 730-day retention window
    alive, none, expected = model.horizon_view(x, t_x, T, 30.0)
    # THEN every answer is a probability or an expectation, and they move smoothly with tenure (no jump at 583)
    for p in (alive, none):
        assert np.all(np.isfinite(p)) and np.all((p >= 0) & (p <= 1))
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    log_alive = np.log(alive).reshape(171, 6)
    steps = np.abs(np.diff(log_alive, axis=0))
    assert steps.max() < 5 * np.median(steps, axis=0).max()


def test_no_parameters_a_fit_may_reach_give_a_non_finite_answer():
    # GIVEN parameters across the ranges fits reach (mean lifetimes β / s from one to 10,000 times a unit, spreads
    # from near-uniform ridges to wide) and users of any tenure up to two years, half of them with five events or fewer
    rng = np.random.default_rng(3)
    T = rng.uniform(0.0, 730.0, 2000)
    t_x = T * rng.random(2000)
    x = np.where(t_x > 0, rng.integers(0, 60, 2000), 0).astype(float)
    x[:1000] = np.minimum(x[:1000], 5.0)
    bad = []
    for _ in range(60):
        r, alpha, s = 10 ** rng.uniform([-1.5, -1.0, -1.5], [1.0, 3.0, 3.0])
        model = ParetoNbd()
        model.params_ = {"r": r, "alpha": alpha, "s": s, "beta": s * 10 ** rng.uniform(0.0, 4.0)}
        # WHEN each is asked of every user
        answers = model.horizon_view(x, t_x, T, 182.0)
        # THEN nothing is NaN or infinite (seven of these sixty gave NaN before quadrature took large B near 1)
        if not all(np.all(np.isfinite(a)) for a in answers):
            bad.append(model.params_)
    assert not bad
