"""scripts/prove_model.py: its figures, verdicts and exit codes (the criteria themselves are measured at full size)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import load_script

prove_model = load_script("prove_model")


def test_auc_is_sklearns_with_ties_and_nan_with_one_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) + 0.4 * y, 1)  # many ties
    assert prove_model.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert np.isnan(prove_model.auc(np.ones(5, dtype=int), p[:5]))


def test_gap_standard_error_is_zero_for_identical_scores_and_positive_for_different_ones():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = rng.random(400) + 0.3 * y
    assert prove_model.gap_standard_error(y, p, p, 50, 1) == 0.0
    assert prove_model.gap_standard_error(y, p, rng.random(400), 50, 1) > 0.0
    assert np.isnan(prove_model.gap_standard_error(y, p, p, 0, 1))


def test_the_in_time_ceiling_learns_what_its_inputs_hold_and_no_more():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from chalicelib.scoring.features import compute_features
    from chalicelib.scoring.state import build_state
    from churnguard_offline.generate import generate_events

    # GIVEN users whose labels are coin flips that only a hidden per-user column knows
    end = datetime(2026, 6, 1, tzinfo=UTC)
    features = compute_features(build_state(generate_events(300, 120, 5, end)).values, end.timestamp())
    labels = np.random.default_rng(2).integers(0, 2, len(features))
    data = SimpleNamespace(features=features, labels=labels, horizon_days=30.0)
    # WHEN the ceiling is measured from the features alone, then knowing the hidden column
    inputs = prove_model.ceiling_inputs(data)
    blind = prove_model.in_time_ceiling(inputs, labels, seed=1)
    knowing = prove_model.in_time_ceiling(np.column_stack([inputs, labels]), labels, seed=1)
    # THEN the features say nothing (cross-fitted: no fold sees its own labels) and the hidden truth says all
    assert abs(blind - 0.5) < 0.1
    assert knowing > 0.99


def test_a_window_too_short_for_two_horizons_exits_2_saying_why(tmp_path, capsys):
    out = tmp_path / "figures.json"
    argv = ["--scenarios", "pareto_nbd", "--users-pareto", "300", "--days", "100", "--seeds", "1", "--out", str(out)]
    assert prove_model.main(argv) == 2
    assert "prove_model:" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--users-pareto", "0"], ["--seeds"], ["--scenarios", "churn"]])
def test_hostile_arguments_are_usage_errors(argv):
    with pytest.raises(SystemExit) as raised:
        prove_model.main(argv)
    assert raised.value.code == 2


@pytest.mark.slow  # trains four models
def test_proof_runs_end_to_end_on_tiny_logs_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "figures.json"
    argv = f"--seeds 1 --users-pareto 1500 --users-purchases 1500 --bootstrap 5 --out {out}".split()
    code = prove_model.main(argv)
    figures = json.loads(out.read_text())
    assert code == (0 if figures["passed"] else 1)
    assert set(figures["scenarios"]) == {"pareto_nbd", "purchases"}
    a, b = figures["scenarios"]["pareto_nbd"], figures["scenarios"]["purchases"]
    for scenario in (a, b):
        assert {"criterion", "passed", "mean_gap", "runs"} <= set(scenario)
        (run,) = scenario["runs"]
        assert run["model_auc"] == pytest.approx(run["model_auc_reported"], abs=1e-6)
        assert run["population"]["name"] == "all" and run["n"] > 0 and run["gap_se"] >= 0
    assert a["runs"][0]["gap"] == pytest.approx(a["runs"][0]["model_auc"] - a["runs"][0]["true_auc"], abs=1e-6)
    b_run = b["runs"][0]
    assert set(b_run["baselines_auc"]) == {"bg_nbd", "pareto_nbd"}
    assert 0.5 < b_run["in_time_ceiling_auc"] <= 1 and 0.5 < b_run["persona_known_auc"] <= 1
    assert b_run["best_baseline_auc_refitted"] == pytest.approx(
        b_run["baselines_auc"][b_run["best_baseline"]], abs=1e-6
    )
    printed = capsys.readouterr().out
    assert "| seed |" in printed and "overall: " in printed and "| in-time ceiling | persona known |" in printed
