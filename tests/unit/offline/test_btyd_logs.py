"""The Pareto/NBD log generator: deterministic, exact summaries, counts that follow the process, and its true model."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from scipy.stats import gamma

from chalicelib.errors import InputError
from chalicelib.ingest import read_event_file
from chalicelib.scoring.btyd import btyd_inputs
from chalicelib.scoring.events import TYPE_CODE
from chalicelib.scoring.pareto_nbd import ParetoNbd
from chalicelib.scoring.state import build_state
from churnguard_offline.btyd_logs import (
    CDNOW,
    ParetoParams,
    SpendParams,
    simulate_pareto_nbd,
    true_model,
    true_p_no_event,
)
from churnguard_offline.cli import build_parser
from churnguard_offline.cli import main as cli_main
from churnguard_offline.generate import KINDS, generate_events

END = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86400.0


@pytest.fixture(scope="module")
def log():
    return simulate_pareto_nbd(20_000, 548, 5, END)


def _state_at(batch, as_of: float):
    return build_state(batch.select(batch.time <= as_of))


def test_same_seed_gives_the_same_log_and_another_seed_a_different_one():
    a, truth_a = simulate_pareto_nbd(500, 365, 1, END)
    b, truth_b = simulate_pareto_nbd(500, 365, 1, END)
    c, _ = simulate_pareto_nbd(500, 365, 2, END)
    assert a.user_ids == b.user_ids
    for column in ("user_index", "time", "type_code", "value"):
        assert np.array_equal(getattr(a, column), getattr(b, column))
    assert np.array_equal(truth_a.rate, truth_b.rate)
    assert len(a) != len(c) or not np.array_equal(a.time, c.time)


def test_every_customer_first_purchases_at_acquisition_inside_the_window_and_never_after_death(log):
    batch, truth = log
    end, start = END.timestamp(), END.timestamp() - 548 * DAY
    assert len(batch.user_ids) == 20_000
    assert np.all((truth.acquired > start) & (truth.acquired <= end))
    first = np.full(20_000, np.inf)
    np.minimum.at(first, batch.user_index, batch.time)
    assert np.array_equal(first, truth.acquired)
    assert np.all((batch.time > start) & (batch.time <= end))
    assert np.all(batch.time <= np.ceil(truth.death[batch.user_index]))
    assert np.all(np.diff(batch.time) >= 0)


def test_events_are_purchases_with_positive_amounts_at_whole_seconds(log):
    batch, _ = log
    assert np.all(batch.type_code == TYPE_CODE["purchase"])
    assert np.all(batch.value > 0) and np.all(np.isfinite(batch.value))
    assert np.array_equal(batch.time, np.floor(batch.time))
    # CDNOW's spend: a mean basket of about $35 (p γ / (q - 1))
    assert 25 < float(np.mean(batch.value)) < 50


def test_fitting_pareto_nbd_on_a_generated_log_recovers_its_parameters():
    # Over twelve seeds of 5,000 customers the fitted r, α and s/β scatter by 4%, 5% and 11% (s.d.) around the
    # truth without bias; s and β alone are weakly identified (16% and 29%), so they are judged through s/β (the
    # mean death rate) and through what the model is for, P(no event in 90 days). Tolerances are about 3 s.d.
    batch, _ = simulate_pareto_nbd(5_000, 548, 0, END)
    x, t_x, T = btyd_inputs(build_state(batch).values, END.timestamp())
    fitted = ParetoNbd().fit(x, t_x, T)
    p = fitted.params_
    assert p["r"] == pytest.approx(CDNOW.r, rel=0.15)
    assert p["alpha"] == pytest.approx(CDNOW.alpha, rel=0.15)
    assert p["s"] / p["beta"] == pytest.approx(CDNOW.s / CDNOW.beta, rel=0.35)
    gap = np.abs(fitted.p_no_event(x, t_x, T, 90.0) - true_model(CDNOW).p_no_event(x, t_x, T, 90.0))
    assert gap.mean() < 0.01


def test_the_true_model_is_calibrated_on_what_the_generator_goes_on_to_do(log):
    # A unit slip (α in weeks taken as days) would be off by tens of points; noise here is about 0.003 overall.
    batch, _ = log
    cut = END.timestamp() - 90 * DAY
    state = _state_at(batch, cut)
    p = true_p_no_event(CDNOW, state.values, cut, 90.0)
    later = {batch.user_ids[u] for u in np.unique(batch.user_index[batch.time > cut])}
    churned = np.array([uid not in later for uid in state.user_ids], dtype=float)
    assert abs(p.mean() - churned.mean()) < 0.01
    deciles = np.array_split(np.argsort(p), 10)
    assert max(abs(p[d].mean() - churned[d].mean()) for d in deciles) < 0.04


def _integrated_likelihood(params: ParetoParams, x: float, t_x: float, T: float, n: int = 800) -> float:
    """Return E[L(x, t_x, T | λ, μ)] over the Gamma priors, by the midpoint rule on the priors' quantiles."""
    u = (np.arange(n) + 0.5) / n
    lam = gamma.ppf(u, params.r, scale=1 / params.alpha)[:, None]
    mu = gamma.ppf(u, params.s, scale=1 / params.beta)[None, :]
    both = lam + mu
    alive = lam**x * np.exp(-both * T)
    died = lam**x * mu / both * (np.exp(-both * t_x) - np.exp(-both * T))
    return float(np.mean(alive + died))


@pytest.mark.parametrize(("x", "t_x", "T"), [(0, 0.0, 30.0), (2, 100.0, 400.0), (6, 380.0, 400.0), (1, 5.0, 500.0)])
def test_true_p_no_event_is_the_ratio_of_likelihoods_integrated_over_the_priors(x, t_x, T):
    # Fader & Hardie's closed form against a direct integration of the individual-level likelihood (their eq. 3);
    # 800 quantiles a side agree within 1e-5 with 5,000 (the error is largest for x = 0, the prior's spike at λ=0).
    direct = _integrated_likelihood(CDNOW, x, t_x, T + 90.0) / _integrated_likelihood(CDNOW, x, t_x, T)
    closed = true_model(CDNOW).p_no_event(np.array([x]), np.array([t_x]), np.array([T]), 90.0)[0]
    assert closed == pytest.approx(direct, abs=1e-4)


def test_true_p_no_event_reads_the_state_rows_as_the_generator_wrote_them():
    batch, truth = simulate_pareto_nbd(300, 200, 4, END)
    as_of = END.timestamp()
    state = build_state(batch)
    order = [batch.user_ids.index(uid) for uid in state.user_ids]
    counts = np.bincount(batch.user_index, minlength=300)[order]
    last = np.zeros(300)
    np.maximum.at(last, batch.user_index, batch.time)
    x, t_x, T = counts - 1.0, (last[order] - truth.acquired[order]) / DAY, (as_of - truth.acquired[order]) / DAY
    expected = true_model(CDNOW).p_no_event(x, t_x, T, 30.0)
    assert np.allclose(true_p_no_event(CDNOW, state.values, as_of, 30.0), expected)


def test_degenerate_sizes_give_consistent_logs():
    empty, _ = simulate_pareto_nbd(0, 30, 1, END)
    assert len(empty) == 0 and empty.user_ids == []
    one, truth = simulate_pareto_nbd(1, 1, 1, END)
    assert one.user_ids == ["u1"] and one.time[0] == truth.acquired[0]
    # a one-day window: everyone acquired within the day, T < 1 day, and the true model still answers
    batch, _ = simulate_pareto_nbd(200, 1, 1, END)
    p = true_p_no_event(CDNOW, build_state(batch).values, END.timestamp(), 90.0)
    assert np.all((p > 0) & (p < 1))


@pytest.mark.parametrize(
    ("n_users", "days", "params", "spend"),
    [
        (-1, 30, CDNOW, None),
        (10, 0, CDNOW, None),
        (10, 30, ParetoParams(0.5, 0.0, 0.6, 80.0), None),
        (10, 30, ParetoParams(0.5, 70.0, float("nan"), 80.0), None),
        (10, 30, CDNOW, SpendParams(6.0, -1.0, 15.0)),
    ],
)
def test_impossible_sizes_or_parameters_are_refused(n_users, days, params, spend):
    kwargs = {"params": params} | ({"spend": spend} if spend else {})
    with pytest.raises(InputError):
        simulate_pareto_nbd(n_users, days, 1, END, **kwargs)


def test_naive_as_of_is_taken_as_utc():
    a, _ = simulate_pareto_nbd(50, 30, 1, datetime(2026, 11, 1))
    b, _ = simulate_pareto_nbd(50, 30, 1, END)
    assert np.array_equal(a.time, b.time)


def test_generate_offers_every_kind_and_pareto_nbd_is_the_generators_log():
    for kind in KINDS:
        args = build_parser().parse_args(f"generate --kind {kind} --users 1 --days 1 --out x.csv".split())
        assert args.kind == kind
    batch = generate_events(400, 100, 3, END, kind="pareto_nbd")
    assert np.array_equal(batch.time, simulate_pareto_nbd(400, 100, 3, END)[0].time)
    with pytest.raises(InputError, match="pareto_nbd"):
        generate_events(10, 10, 1, END, kind="nonsense")


def test_generate_kind_pareto_nbd_writes_a_file_that_reads_back_as_the_log(tmp_path):
    out = tmp_path / "btyd.csv.gz"
    argv = f"generate --kind pareto_nbd --users 800 --days 365 --seed 2 --as-of 2026-11-01 --out {out}".split()
    assert cli_main(argv) == 0
    read = read_event_file(out).events
    expected, _ = simulate_pareto_nbd(800, 365, 2, END)
    assert sorted(read.user_ids) == sorted(expected.user_ids)
    assert np.array_equal(np.sort(read.time), np.sort(expected.time))
    assert np.allclose(np.sort(read.value), np.sort(expected.value))


@pytest.mark.slow  # trains a model
def test_train_reads_a_generated_pareto_nbd_log_and_writes_a_model(tmp_path):
    out = tmp_path / "btyd.csv"
    argv = f"generate --kind pareto_nbd --users 1500 --days 548 --seed 2 --as-of 2026-11-01 --out {out}".split()
    assert cli_main(argv) == 0
    argv = f"train --events {out} --cutoff 2026-08-03 --horizon-days 90 --out {tmp_path / 'model'}".split()
    assert cli_main(argv) == 0
    assert (tmp_path / "model" / "manifest.json").exists()
