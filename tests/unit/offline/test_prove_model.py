"""scripts/prove_model.py: its figures, verdicts and exit codes (the criteria themselves are measured at full size)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chalicelib.scoring.events import TYPE_CODE
from churnguard_offline.training import candidates
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


@pytest.mark.slow  # fits train's three candidates five times each
def test_the_in_time_ceiling_is_the_best_of_the_candidates_train_chooses_from():
    # GIVEN few rows whose labels follow one linear score of many weak columns: shape a linear model finds and
    # trees, splitting one column at a time on 600 rows, only approximate
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 30))
    labels = (X.sum(axis=1) / np.sqrt(30) + rng.normal(scale=0.5, size=600) > 0).astype(int)
    # WHEN the ceiling is measured
    by_learner = prove_model.in_time_ceilings(X, labels, seed=1)
    record = prove_model._ceiling_record(X, labels, seed=1)
    # THEN each of train's candidates is measured, the linear one leads here, and the ceiling is the best of them
    assert set(by_learner) == set(candidates(1))
    trees = max(by_learner["hist_gradient_boosting"], by_learner["random_forest"])
    assert by_learner["logistic_regression"] > trees + 0.05
    assert prove_model.in_time_ceiling(X, labels, seed=1) == max(by_learner.values())
    assert record["in_time_ceiling_auc"] == round(by_learner["logistic_regression"], 6)
    assert record["in_time_ceiling_by_learner"] == {name: round(value, 6) for name, value in by_learner.items()}


def test_a_candidate_with_no_figure_never_decides_the_ceiling():
    assert prove_model._best({"a": float("nan"), "b": 0.7, "c": 0.6}) == 0.7
    assert prove_model._best({"b": 0.7, "a": float("nan")}) == 0.7
    assert np.isnan(prove_model._best({"a": float("nan")}))


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
    sizes = "--users-pareto 1500 --users-purchases 1500"
    argv = f"--scenarios pareto_nbd purchases --seeds 1 {sizes} --bootstrap 5 --out {out}".split()
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
    _assert_judged_against_eight_rankings(b_run)
    assert 0.5 < b_run["in_time_ceiling_auc"] <= 1 and 0.5 < b_run["persona_known_auc"] <= 1
    assert set(b_run["in_time_ceiling_by_learner"]) == set(candidates(1))
    assert b_run["in_time_ceiling_auc"] == max(b_run["in_time_ceiling_by_learner"].values())
    _assert_raw_log_ceiling(b_run)
    printed = capsys.readouterr().out
    assert "| seed |" in printed and "overall: " in printed
    assert "| in-time ceiling | raw-log ceiling | persona known |" in printed


def _assert_raw_log_ceiling(run):
    # the raw-log ceiling is train's candidates on the model's inputs with the raw history beside them
    assert set(run["raw_log_ceiling_by_learner"]) == set(candidates(1))
    assert run["raw_log_ceiling_auc"] == max(run["raw_log_ceiling_by_learner"].values())
    assert 0.5 < run["raw_log_ceiling_auc"] <= 1
    assert run["raw_log_ceiling_by_learner"] != run["in_time_ceiling_by_learner"]


def _assert_judged_against_eight_rankings(run):
    # the yardstick is the best of eight rankings, evaluate's five among them exactly as it reported them
    baselines = run["baselines_auc"]
    fits = ("", "_at_cutoff", "_days_at_cutoff")
    expected = {"pareto_nbd_expected_at_cutoff", "pareto_nbd_expected_days_at_cutoff"}
    assert set(baselines) == {f"{name}{fit}" for name in ("bg_nbd", "pareto_nbd") for fit in fits} | expected
    shown = {"bg_nbd", "pareto_nbd", "bg_nbd_at_cutoff", "pareto_nbd_at_cutoff", "pareto_nbd_expected_at_cutoff"}
    assert set(run["baselines_auc_reported"]) == shown
    for name in shown:
        assert baselines[name] == pytest.approx(run["baselines_auc_reported"][name], abs=1e-6)
    assert run["best_baseline"] == max(baselines, key=baselines.get)
    assert run["gap"] == pytest.approx(run["model_auc"] - baselines[run["best_baseline"]], abs=1e-6)
    assert run["passed"] == (run["gap"] >= prove_model.MARGIN - 1e-9)


def test_the_proof_refuses_to_judge_where_evaluate_showed_other_buy_till_you_die_figures():
    from types import SimpleNamespace

    # GIVEN rankings of 200 users, and an evaluate report whose Pareto/NBD at the cutoff is not what they give
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    predictions = {name: rng.random(200) for name in ("bg_nbd", "pareto_nbd", "pareto_nbd_at_cutoff")}
    figures = {name: prove_model.auc(labels, p) for name, p in predictions.items()}
    reported = {
        "baselines": {"bg_nbd": {"auc": figures["bg_nbd"]}, "pareto_nbd": {"auc": figures["pareto_nbd"]}},
        "baselines_at_cutoff": {"pareto_nbd": {"auc": figures["pareto_nbd_at_cutoff"] + 0.01}},
    }
    spec = prove_model.RunSpec(users=200, days=100, horizon_days=30.0, seed=1, bootstrap_draws=5, lookback_days=None)
    # WHEN the model is judged against them, THEN the proof stops naming the ranking that differs
    with pytest.raises(prove_model.InputError, match="pareto_nbd_at_cutoff"):
        prove_model._against_btyd(spec, SimpleNamespace(labels=labels), rng.random(200), predictions, reported)
    # and with the report as shown, it judges
    reported["baselines_at_cutoff"]["pareto_nbd"]["auc"] -= 0.01
    judged = prove_model._against_btyd(spec, SimpleNamespace(labels=labels), rng.random(200), predictions, reported)
    assert judged["best_baseline"] == max(figures, key=figures.get)


_MASTER_HEADER = " customer_id  date number_of_cds  dollar_value\n"


def _master_log(path, lines):
    path.write_text(_MASTER_HEADER + "".join(f" {c} {d}  {n}   {v}\n" for c, d, n, v in lines))
    return path


def test_every_line_of_cdnows_master_log_becomes_one_accepted_purchase(tmp_path):
    from datetime import UTC, datetime

    # GIVEN a master log in CDNOW's layout, two purchases of one customer on one day among them
    lines = [("00001", "19970101", 1, "11.77"), ("00002", "19970112", 1, "12.00"), ("00002", "19970112", 5, "77.00")]
    source = _master_log(tmp_path / "master.txt", lines)
    # WHEN it is read as a behaviour file
    events, rows = prove_model.cdnow_log(source, None, tmp_path)
    # THEN every line is a purchase at its date's midnight, UTC, for its dollars, and none is rejected
    assert rows == {"read": 3, "scored": 3, "rejected": 0, "rejected_by_reason": {}}
    assert sorted(events.user_ids) == ["00001", "00002"]
    assert set(events.type_code.tolist()) == {TYPE_CODE["purchase"]}
    jan12 = datetime(1997, 1, 12, tzinfo=UTC).timestamp()
    assert sorted(events.time.tolist()) == [datetime(1997, 1, 1, tzinfo=UTC).timestamp(), jan12, jan12]
    assert sorted(events.value.tolist()) == [11.77, 12.0, 77.0]


def test_a_file_not_in_cdnows_layout_is_refused_naming_it(tmp_path):
    source = tmp_path / "master.txt"
    source.write_text("user_id,event_time,event_type\nu1,2026-01-01,purchase\n")
    with pytest.raises(prove_model.InputError, match=r"master\.txt: not CDNOW's master log"):
        prove_model.cdnow_log(source, None, tmp_path)


def test_a_smaller_cdnow_draws_the_same_customers_whole_every_time(tmp_path):
    # GIVEN 40 customers of three purchases each
    lines = [(f"{c:05d}", f"199701{d:02d}", 1, "10.00") for c in range(1, 41) for d in (3, 9, 27)]
    source = _master_log(tmp_path / "master.txt", lines)
    # WHEN 10 are drawn, twice
    first, _ = prove_model.cdnow_log(source, 10, tmp_path)
    again, _ = prove_model.cdnow_log(source, 10, tmp_path)
    # THEN the same 10 come back, each with all of their purchases
    assert len(first.user_ids) == 10 and sorted(first.user_ids) == sorted(again.user_ids)
    assert np.bincount(first.user_index).tolist() == [3] * 10


def test_without_the_reference_implementation_scenario_cdnow_says_what_to_install(monkeypatch):
    monkeypatch.setattr(prove_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(prove_model.InputError, match="needs the lifetimes package"):
        prove_model.cdnow_source()


@pytest.mark.slow  # trains a model on 3,000 of CDNOW's customers
def test_scenario_cdnow_judges_the_model_against_the_strongest_buy_till_you_die_fit(tmp_path, capsys):
    out = tmp_path / "figures.json"
    code = prove_model.main(f"--scenarios cdnow --users-cdnow 3000 --seeds 1 --bootstrap 5 --out {out}".split())
    scenario = json.loads(out.read_text())["scenarios"]["cdnow"]
    (run,) = scenario["runs"]
    assert code == (0 if scenario["passed"] else 1)
    assert run["rows"]["rejected"] == 0 and run["n"] == 3000 and run["population"]["name"] == "all"
    _assert_judged_against_eight_rankings(run)
    assert run["model_auc"] == pytest.approx(run["model_auc_reported"], abs=1e-6)
    _assert_raw_log_ceiling(run)
    assert "| in-time ceiling | raw-log ceiling |" in capsys.readouterr().out


def test_purchase_days_counts_a_customers_purchases_of_one_day_once(tmp_path):
    from types import SimpleNamespace

    # GIVEN customer 1 buying twice on 1997-01-01 and once on 01-11, customer 2 once on 01-05, one more after the cut
    lines = [("00001", "19970101", 1, "5.00"), ("00001", "19970101", 2, "9.00"), ("00001", "19970111", 1, "4.00")]
    lines += [("00002", "19970105", 1, "7.00"), ("00002", "19970201", 1, "7.00")]
    events, _ = prove_model.cdnow_log(_master_log(tmp_path / "master.txt", lines), None, tmp_path)
    cutoff = 9_882 * 86_400.0  # 1997-01-21, in days since 1970
    data = SimpleNamespace(cutoff=cutoff, user_ids=["00002", "00001"])
    # WHEN their buy-till-you-die inputs are taken in purchase days
    x, t_x, T = prove_model.purchase_days(events, data)
    # THEN the same day counts once, the purchase after the cutoff not at all, and the order is the judged users'
    assert x.tolist() == [0.0, 1.0] and t_x.tolist() == [0.0, 10.0] and T.tolist() == [16.0, 20.0]


def test_raw_history_bins_each_users_log_by_month_back_from_the_cutoff():
    from types import SimpleNamespace

    from chalicelib.scoring.events import EventBatch

    day = 86_400.0
    # GIVEN user a buying twice on day 99 (5 and 3), once on day 60 (2) and day 10 (1), and once after the cutoff;
    # b once on day 0 with no value; c on days -400 and -300, past the oldest bin's start; d exactly at the cutoff
    # and exactly a month (30.5 days) before it; e twice on day 69, whose rows straddle that month's start, the
    # later row first; f a purchase and a larger refund on day 50
    rows = [("a", 99.5, 5.0), ("a", 99.6, 3.0), ("a", 60.0, 2.0), ("a", 10.0, 1.0), ("a", 100.5, 50.0)]
    rows += [("b", 0.0, np.nan), ("c", -400.0, 4.0), ("c", -300.0, 6.0), ("d", 100.0, 2.0), ("d", 69.5, 3.0)]
    rows += [("e", 69.6, 4.0), ("e", 69.2, 6.0), ("f", 50.0, -8.0), ("f", 50.5, 5.0)]
    ids = ["a", "b", "c", "d", "e", "f"]
    events = EventBatch(
        user_ids=ids,
        user_index=np.array([ids.index(u) for u, _, _ in rows], dtype=np.int32),
        time=np.array([t * day for _, t, _ in rows]),
        type_code=np.zeros(len(rows), dtype=np.int8),
        value=np.array([v for _, _, v in rows]),
    )
    data = SimpleNamespace(cutoff=100.0 * day, user_ids=["b", "a", "c", "d", "e", "f"])
    # WHEN their raw history is taken at the cutoff
    history = np.expm1(prove_model.raw_history(events, data))
    last = prove_model.HISTORY_BINS - 1

    def expected(counts, days, spend, first_value, gaps):
        month = np.zeros((3, prove_model.HISTORY_BINS))
        for k, cells in enumerate((counts, days, spend)):
            for b, amount in cells.items():
                month[k, b] = amount
        return [*month.ravel(), first_value, sum(days.values()), *gaps]

    # THEN each month holds its events, days and value, nothing after the cutoff counts, the oldest bin takes all
    # that is older, and the gaps are between days with an event: a's 50 and 39 days
    a = expected({0: 2, 1: 1, 2: 1}, {0: 1, 1: 1, 2: 1}, {0: 8, 1: 2, 2: 1}, 1, [44.5, 5.5, 50, 39])
    b = expected({3: 1}, {3: 1}, {}, 0, [0, 0, 0, 0])
    c = expected({last: 2}, {last: 2}, {last: 10}, 4, [100, 0, 100, 100])
    np.testing.assert_allclose(history[:3], [b, a, c], atol=1e-9)
    # AND an event at the cutoff is history, one exactly a month back counts in the older month, as does a day
    # that straddles two months, whatever the rows' order, and a net refund counts as no spend
    d = expected({0: 1, 1: 1}, {0: 1, 1: 1}, {0: 2, 1: 3}, 3, [31, 0, 31, 31])
    e = expected({0: 1, 1: 1}, {1: 1}, {0: 4, 1: 6}, 10, [0, 0, 0, 0])
    f = expected({1: 2}, {1: 1}, {}, 0, [0, 0, 0, 0])
    np.testing.assert_allclose(history[3:], [d, e, f], atol=1e-9)
    assert history.shape == (6, 3 * prove_model.HISTORY_BINS + 6)
