"""Baselines: BG/NBD agrees with the reference implementation, and every yardstick ranks churners out of time."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from chalicelib.errors import InputError
from chalicelib.scoring.events import TYPE_CODE, EventBatch
from chalicelib.scoring.features import compute_features
from chalicelib.scoring.state import build_state
from churnguard_offline.baselines import BASELINE_NAMES, Baselines, BgNbd, btyd_inputs, evaluate_baselines
from churnguard_offline.generate import generate_events
from churnguard_offline.training import labelled_set
from tests.cdnow import cdnow_summary, lifetimes

BetaGeoFitter = lifetimes.BetaGeoFitter

AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
DAY = 86400.0
HORIZON = 30
# Fader, Hardie & Lee (2005), Marketing Science 24(2), on the 2,357 CDNOW customers, time in weeks.
PUBLISHED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LOG_LIKELIHOOD = -9582.4


@pytest.fixture(scope="module")
def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return cdnow_summary()


@pytest.fixture(scope="module", params=["multi", "purchases"])
def origins(request):
    """(fit set two horizons before the end of the data, evaluation set one horizon before)."""
    events = generate_events(4000, 365, 23, AS_OF, kind=request.param)
    end = AS_OF.timestamp()
    return labelled_set(events, end - 2 * HORIZON * DAY, HORIZON), labelled_set(events, end - HORIZON * DAY, HORIZON)


def _simulate_bg_nbd(n: int, params: dict[str, float], horizon: float, seed: int):
    """Draw customers from the BG/NBD story itself: (x, t_x, T, alive at T, no transaction in (T, T+horizon])."""
    rng = np.random.default_rng(seed)
    T = rng.uniform(5.0, 40.0, n)
    lam = rng.gamma(params["r"], 1.0 / params["alpha"], n)
    p = rng.beta(params["a"], params["b"], n)
    dropout_after = rng.geometric(p)  # the repeat transaction after which the customer leaves
    arrivals = rng.poisson(lam * T)  # transactions in (0, T] had the customer never left
    x = np.minimum(dropout_after, arrivals)
    # Given n arrivals in (0, T], their times are n uniform draws; the x-th is a Beta order statistic.
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), arrivals - x + 1), 0.0)
    alive = dropout_after > arrivals
    quiet = ~alive | (rng.random(n) < np.exp(-lam * horizon))
    return x.astype(float), t_x, T, alive, quiet


def test_fit_matches_lifetimes_and_the_published_cdnow_parameters(cdnow):
    # Given the CDNOW summary shipped with lifetimes
    x, t_x, T = cdnow
    # When both implementations fit it
    ours = BgNbd().fit(x, t_x, T)
    reference = BetaGeoFitter().fit(x, t_x, T)
    # Then the parameters agree with each other and with the paper, to its printed precision
    ref_params = reference.params_.to_dict()
    for name in PUBLISHED:
        assert ours.params_[name] == pytest.approx(ref_params[name], rel=1e-3)
        assert ours.params_[name] == pytest.approx(PUBLISHED[name], abs=5e-3)
    assert ours.log_likelihood_ == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.05)
    # And so do the per-customer probabilities of being alive
    np.testing.assert_allclose(ours.p_alive(x, t_x, T), reference.conditional_probability_alive(x, t_x, T), atol=1e-5)


def test_p_no_event_agrees_with_lifetimes_likelihood_and_expectations(cdnow):
    # Given a model fitted on CDNOW and a varied sample of its customers
    x, t_x, T = (v[::40] for v in cdnow)
    ours = BgNbd().fit(*cdnow)
    reference = BetaGeoFitter().fit(*cdnow)
    log_params = np.log(reference.params_[["r", "alpha", "a", "b"]].to_numpy())

    def log_lik(i: int, age: float) -> float:
        args = (x[i : i + 1], t_x[i : i + 1], np.array([age]), np.ones(1), 0.0)
        return -float(reference._negative_log_likelihood(log_params, *args))

    # When we ask for P(no transaction in the next 8 weeks)
    p = ours.p_no_event(x, t_x, T, 8.0)
    # Then it is the reference likelihood of the same history seen 8 weeks longer, over the likelihood now
    ratio = np.array([np.exp(log_lik(i, T[i] + 8.0) - log_lik(i, T[i])) for i in range(x.size)])
    np.testing.assert_allclose(p, ratio, rtol=1e-6)
    # And over a very short horizon, P(a transaction) is the reference's expected number of transactions
    h = 1e-4
    expected = reference.conditional_expected_number_of_purchases_up_to_time(h, x, t_x, T)
    np.testing.assert_allclose(1.0 - ours.p_no_event(x, t_x, T, h), expected, rtol=1e-3)


def test_fit_matches_lifetimes_on_generated_behaviour_in_days(origins):
    # Given the BG/NBD inputs of generated users at the fitting origin (every event a transaction)
    fit_set, _ = origins
    x, t_x, T = btyd_inputs(fit_set.values, fit_set.cutoff)
    # When both implementations fit them
    ours = BgNbd().fit(x, t_x, T)
    # (at lifetimes' default tol of 1e-7 its BFGS can end on "precision loss" at the optimum itself,
    # depending on the floating-point path of the machine; 1e-6 still pins the parameters to 1e-5)
    reference = BetaGeoFitter().fit(x, t_x, T, tol=1e-6)
    # Then parameters and probabilities of being alive agree
    for name, value in reference.params_.items():
        assert ours.params_[name] == pytest.approx(value, rel=1e-2)
    np.testing.assert_allclose(ours.p_alive(x, t_x, T), reference.conditional_probability_alive(x, t_x, T), atol=1e-4)


def test_probabilities_match_customers_simulated_from_the_model():
    # Given customers drawn from a BG/NBD with known parameters, and what happened to them next
    truth = {"r": 0.8, "alpha": 6.0, "a": 0.9, "b": 3.0}
    x, t_x, T, alive, quiet = _simulate_bg_nbd(20_000, truth, horizon=10.0, seed=5)
    # When the model with those parameters predicts, and a model is fitted to the data alone
    model = BgNbd()
    model.params_ = truth
    p_alive, p_quiet = model.p_alive(x, t_x, T), model.p_no_event(x, t_x, T, 10.0)
    fitted = BgNbd().fit(x, t_x, T)
    # Then the predictions are calibrated overall and within each decile of predicted risk
    assert p_alive.mean() == pytest.approx(alive.mean(), abs=0.015)
    assert p_quiet.mean() == pytest.approx(quiet.mean(), abs=0.015)
    for decile in np.array_split(np.argsort(p_quiet), 10):
        assert p_quiet[decile].mean() == pytest.approx(quiet[decile].mean(), abs=0.04)
    # And the fit recovers the parameters
    for name, value in truth.items():
        assert fitted.params_[name] == pytest.approx(value, rel=0.25)


def test_customer_without_repeat_events_is_certainly_alive():
    # Given a fitted model and customers seen once, at various ages
    model = BgNbd()
    model.params_ = {"r": 0.5, "alpha": 3.0, "a": 0.7, "b": 2.0}
    T = np.array([0.0, 1.0, 30.0, 400.0])
    zeros = np.zeros_like(T)
    # Then each is alive for sure, and stays quiet only as long as the Poisson process allows
    np.testing.assert_array_equal(model.p_alive(zeros, zeros, T), 1.0)
    np.testing.assert_allclose(model.p_no_event(zeros, zeros, T, 7.0), ((3.0 + T) / (10.0 + T)) ** 0.5)


def test_bg_nbd_churn_risk_rises_with_time_since_last_event():
    # Given customers alike but for how long ago their last transaction was
    model = BgNbd()
    model.params_ = {"r": 0.5, "alpha": 3.0, "a": 0.7, "b": 2.0}
    t_x = np.linspace(50.0, 0.0, 26)
    x, T = np.full_like(t_x, 4.0), np.full_like(t_x, 50.0)
    # When we ask for P(alive) and P(no event in 30 days)
    p_alive, p_quiet = model.p_alive(x, t_x, T), model.p_no_event(x, t_x, T, 30.0)
    # Then the longer the silence, the less likely alive and the more likely quiet, within [0, 1]
    assert np.all(np.diff(p_alive) < 0) and np.all(np.diff(p_quiet) > 0)
    assert np.all((p_quiet >= 0) & (p_quiet <= 1)) and np.all((p_alive >= 0) & (p_alive <= 1))


def test_every_baseline_risk_stays_in_range_and_never_falls_while_users_stay_silent(origins):
    # Given baselines fitted at the earlier origin and users' state at the later one
    fit_set, eval_set = origins
    baselines = Baselines().fit(fit_set.values, fit_set.features, fit_set.labels, fit_set.cutoff, HORIZON)
    # When the same users are scored 0, 7, ..., 63 days later with no new events
    risks = [
        baselines.predict(eval_set.values, compute_features(eval_set.values, at), at)
        for at in eval_set.cutoff + np.arange(0, 64, 7) * DAY
    ]
    # Then every probability is in [0, 1] and no user's risk goes down as the silence grows
    for name in BASELINE_NAMES:
        p = np.stack([r[name] for r in risks])
        assert np.all((p >= 0) & (p <= 1)), name
        assert np.all(np.diff(p, axis=0) >= -1e-12), name


def test_each_baseline_ranks_churners_out_of_time(origins):
    # Given baselines fitted two horizons before the end of the data
    fit_set, eval_set = origins
    # When they are evaluated one horizon later
    scores = evaluate_baselines(fit_set, eval_set)
    # Then each ranks churners well above chance and beats predicting the churn rate for everyone
    churn_rate = eval_set.labels.mean()
    assert list(scores) == list(BASELINE_NAMES)
    for name, m in scores.items():
        assert set(m) == {"auc", "pr_auc", "brier"}
        assert m["auc"] > 0.7, (name, m)
        assert m["pr_auc"] > churn_rate + 0.15, (name, m)
        assert m["brier"] < churn_rate * (1 - churn_rate), (name, m)


def test_btyd_inputs_count_every_event_as_a_transaction():
    # Given a user with a login, a purchase and a complaint over ten days, and one seen once
    start = AS_OF.timestamp() - 20 * DAY
    events = EventBatch(
        user_ids=["many", "once"],
        user_index=np.array([0, 0, 0, 1], dtype=np.int32),
        time=np.array([start, start + 4 * DAY, start + 10 * DAY, start + 15 * DAY]),
        type_code=np.array([TYPE_CODE[t] for t in ("login", "purchase", "complaint", "login")], dtype=np.int8),
        value=np.array([np.nan, 20.0, np.nan, np.nan]),
    )
    # When their state is read as BG/NBD inputs at the as-of time
    x, t_x, T = btyd_inputs(build_state(events).values, AS_OF.timestamp())
    # Then repeats, days to the last event and days since the first event are counted over all types
    np.testing.assert_allclose(x, [2.0, 0.0])
    np.testing.assert_allclose(t_x, [10.0, 0.0])
    np.testing.assert_allclose(T, [20.0, 5.0])
    # And a state that already holds later events is refused
    with pytest.raises(InputError, match="after the as-of"):
        btyd_inputs(build_state(events).values, start + 12 * DAY)


def test_inconsistent_bg_nbd_inputs_are_refused():
    with pytest.raises(InputError, match="t_x <= T"):
        BgNbd().fit(np.array([1.0, 2.0]), np.array([3.0, 5.0]), np.array([4.0, 4.0]))
    with pytest.raises(InputError, match="not fitted"):
        BgNbd().p_alive(np.ones(1), np.ones(1), np.ones(1))


@pytest.mark.slow  # fits Pareto/NBD on 4,000 users twice per kind of log
def test_buy_till_you_die_at_the_cutoff_is_fitted_on_the_judged_users_and_reads_no_label(origins):
    from churnguard_offline.baselines import AT_CUTOFF_NAMES, at_cutoff, evaluate_at_cutoff

    # GIVEN the users judged at one cutoff
    _, data = origins
    # WHEN BG/NBD and Pareto/NBD are fitted on their own history there
    scores = at_cutoff(data.values, data.cutoff, data.horizon_days)
    figures = evaluate_at_cutoff(data)
    # THEN each gives every user a score; the two probabilities are probabilities, the expectation only ranks
    assert tuple(scores) == tuple(figures) == AT_CUTOFF_NAMES
    for name in ("bg_nbd", "pareto_nbd"):
        assert ((scores[name] >= 0) & (scores[name] <= 1)).all()
        assert set(figures[name]) == {"auc", "pr_auc", "brier"}
    assert set(figures["pareto_nbd_expected"]) == {"auc", "pr_auc"} and (scores["pareto_nbd_expected"] <= 0).all()
    # AND they rank churners well above chance, fitted where they are judged
    assert all(f["auc"] > 0.75 for f in figures.values()), figures
    # AND the fit is the judged users' own: fitted on half of them, the other half score otherwise
    half = data.values[::2]
    own = at_cutoff(half, data.cutoff, data.horizon_days)["pareto_nbd"]
    assert not np.allclose(own, scores["pareto_nbd"][::2], rtol=0, atol=1e-9)
