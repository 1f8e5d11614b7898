"""What `train` and `evaluate` refuse, naming the file, and what they write where a figure is undefined."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning

from chalicelib.errors import InputError
from churnguard_offline import training
from churnguard_offline.cli import main, rejects_path
from churnguard_offline.metrics import classification_metrics, json_ready, tier_performance
from churnguard_offline.small_data import TrainingMode
from churnguard_offline.training import CALIBRATION_AUC_SLACK, _calibrate, _Choice, _selection_text
from tests.conftest import ROOT

START = datetime(2026, 1, 1, tzinfo=UTC)
CUTOFF = datetime(2026, 3, 1, tzinfo=UTC)  # 59 days after START: one origin only


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _counted_log(path, churners: int, stayers: int, seed: int = 0):
    """Write a log of users with 1-6 events before CUTOFF; the stayers also have one in the 30 days after it."""
    rng = random.Random(seed)
    rows = []
    span = int((CUTOFF - START).total_seconds())
    for i in range(churners + stayers):
        for _ in range(rng.randint(1, 6)):
            rows.append((f"u{i:04d}", START + timedelta(seconds=rng.randrange(span)), f"{rng.uniform(1, 50):.2f}"))
        if i >= churners:
            rows.append((f"u{i:04d}", CUTOFF + timedelta(seconds=rng.randrange(1, 30 * 86_400)), "5"))
    rows.sort(key=lambda row: row[1])
    path.write_text(
        "user_id,event_time,event_type,value\n" + "".join(f"{u},{_stamp(t)},purchase,{v}\n" for u, t, v in rows)
    )
    return path


def _train(events, out, data_end: str = "2026-03-31") -> int:
    argv = ["train", "--events", str(events), "--cutoff", "2026-03-01", "--horizon-days", "30", "--out", str(out)]
    return main([*argv, "--data-end", data_end, "--quiet"])


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_a_file_with_no_usable_row_is_refused_naming_it(tmp_path, capsys):
    # GIVEN a file whose every purchase has a value that is not a number
    log = tmp_path / "nan.csv"
    log.write_text("user_id,event_time,event_type,value\n" + "u1,2026-02-01T00:00:00Z,purchase,abc\n" * 3)
    # WHEN trained THEN it exits 2 with one line naming the file, and writes no artifact
    assert _train(log, tmp_path / "m") == 2
    assert _error(capsys).endswith(f"{log}: the event log holds no usable events")
    assert not (tmp_path / "m").exists()
    # AND every row is in the rejects beside it, with its line and reason
    rejected = list(csv.DictReader((tmp_path / "m.rejected.csv").open()))
    assert [(r["line"], r["reason"]) for r in rejected] == [("2", "bad_value"), ("3", "bad_value"), ("4", "bad_value")]


REJECTS = "line,reason,detail,user_id,event_time,event_type,value\n"


def _with_bad_rows(path):
    with path.open("a") as out:
        out.write("u1,yesterday,purchase,3\n,2026-02-01T00:00:00Z,purchase,3\n")
    return path


@pytest.mark.parametrize("sampled", [False, True])
def test_train_writes_its_rejected_rows_beside_the_artifact_never_inside_it(tmp_path, capsys, sampled):
    # GIVEN a trainable log with two bad rows, and an earlier run's rejects of another file at the same place
    log = _with_bad_rows(_counted_log(tmp_path / "log.csv", churners=60, stayers=60))
    stale = tmp_path / "m.rejected.csv"
    stale.write_text("line,reason,detail,user_id,event_time,event_type,value\n9,bad_value,stale,u9,,login,x\n")
    extra = ["--sample-users", "1000"] if sampled else []
    argv = ["train", "--events", str(log), "--cutoff", "2026-03-01", "--horizon-days", "30", "--out"]
    assert main([*argv, str(tmp_path / "m"), "--data-end", "2026-03-31", *extra]) == 0
    # THEN the rejects name each bad row's line and reason, beside the artifact and not in it (it is deployed)
    rejected = list(csv.DictReader(stale.open()))
    lines = len(log.read_text().splitlines())
    assert [(int(r["line"]), r["reason"]) for r in rejected] == [
        (lines - 1, "bad_event_time"),
        (lines, "missing_user_id"),
    ]
    assert not any(path.name.endswith(".rejected.csv") for path in (tmp_path / "m").iterdir())
    assert f"{stale}: 2 rejected rows (bad_event_time 1, missing_user_id 1)" in capsys.readouterr().err
    # AND a run with no bad row leaves no rejects behind that would speak for it
    clean = _counted_log(tmp_path / "clean.csv", churners=60, stayers=60)
    argv[2] = str(clean)
    assert main([*argv, str(tmp_path / "m"), "--data-end", "2026-03-31", "--quiet", *extra]) == 0
    assert not stale.exists()


def test_evaluate_says_why_rows_were_rejected(tmp_path, capsys):
    log = _with_bad_rows(_counted_log(tmp_path / "log.csv", churners=60, stayers=60))
    assert _evaluate(log) == 0
    assert f"{log}: 2 rejected rows (bad_event_time 1, missing_user_id 1)" in capsys.readouterr().err


def test_one_origin_whose_held_out_quarter_holds_too_few_churners_is_refused(tmp_path, capsys):
    # GIVEN one origin with 7 churners: 5 to fit on, 2 in the quarter held out to judge on
    log = _counted_log(tmp_path / "seven.csv", churners=7, stayers=100)
    # THEN nothing can be judged on those 2, and train says so, naming the file and the counts
    assert _train(log, tmp_path / "m") == 2
    line = _error(capsys)
    assert str(log) in line and "held out to judge on" in line and "2 churners and" in line
    # AND with 20 churners the quarter holds 5: a buy-till-you-die model is trained and judged on them
    assert _train(_counted_log(tmp_path / "twenty.csv", churners=20, stayers=100), tmp_path / "m") == 0
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text(), parse_constant=_no_constant)
    assert manifest["validation"]["kind"] == "held_out_users"
    assert round(manifest["validation"]["churn_rate"] * manifest["validation"]["users"]) == 5
    # AND a tier no held-out user fell in has no precision: null in the manifest, "-" on the card
    empty = [tier for tier, perf in manifest["tier_performance"].items() if perf["share"] == 0]
    assert empty and all(manifest["tier_performance"][tier]["precision"] is None for tier in empty)
    card = (tmp_path / "m" / "model_card.md").read_text()
    assert all(re.search(rf"^\| {tier} \| [^|]+ \| 0\.000 \| - \| 0\.000 \|$", card, re.M) for tier in empty)
    # AND the card gives each calibration's AUC beside its Brier score: why a lower Brier score may not be taken
    aucs = ", ".join(f"{k} {v:.4f}" for k, v in manifest["calibration_auc"].items())
    assert set(manifest["calibration_auc"]) == {"none", "sigmoid", "isotonic"} and f"; AUC: {aucs} (" in card


def _no_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("")
    assert _train(tmp_path / "absent.csv", taken) == 2
    assert _error(capsys).endswith(f"{taken}: exists and is not a directory; --out is the artifact's directory")


def test_an_event_after_data_end_is_refused_saying_what_a_date_means(tmp_path, capsys):
    log = _counted_log(tmp_path / "log.csv", churners=60, stayers=60)
    assert _train(log, tmp_path / "m", data_end="2026-03-20") == 2
    line = _error(capsys)
    assert str(log) in line and "is after --data-end 2026-03-20T00:00:00Z" in line
    assert "give the day after D" in line


def _evaluate(events, *extra: str) -> int:
    argv = ["evaluate", "--model", str(ROOT / "model_artifacts"), "--events", str(events), "--cutoff", "2026-03-01"]
    return main([*argv, "--horizon-days", "30", "--data-end", "2026-03-31", *extra])


def test_evaluate_where_everyone_churned_exits_2_naming_the_counts(tmp_path, capsys):
    log = _counted_log(tmp_path / "gone.csv", churners=40, stayers=0)
    assert _evaluate(log) == 2
    line = _error(capsys)
    assert str(log) in line and "40 churned in the horizon and 0 stayed: AUC and PR-AUC need both" in line


def test_evaluate_of_an_active_population_with_no_active_user_says_so(tmp_path, capsys):
    # GIVEN 30 users last seen in 2025-06, more than 180 days before the cutoff and within the 730 kept
    log = tmp_path / "old.csv"
    log.write_text(
        "user_id,event_time,event_type\n"
        + "".join(f"u{i},2025-06-{1 + i:02d}T00:00:00Z,login\n" for i in range(30))
        + "u0,2026-03-10T00:00:00Z,login\n"
    )
    assert _evaluate(log, "--population", "active") == 2
    line = _error(capsys)
    assert str(log) in line and "none of the 30 users known at the cutoff was seen within 180 days" in line
    # AND the whole population is judged, and printed as JSON with no NaN in it
    assert _evaluate(log, "--population", "all") == 0
    report = json.loads(capsys.readouterr().out, parse_constant=_no_constant)
    assert report["n"] == 30 and report["population"]["name"] == "all"


def test_evaluate_reports_the_model_with_a_note_where_baselines_have_nothing_to_fit_on(tmp_path, capsys):
    # GIVEN users first seen in February 2026, and one last seen in January 2025: one horizon before the cutoff,
    # no one is active, so the active population's baselines have nobody to be fitted on
    log = tmp_path / "new.csv"
    rows = [f"u{i},2026-02-{1 + i % 27:02d}T00:00:00Z,purchase,{1 + i}" for i in range(30)]
    rows += [f"u{i},2026-03-{2 + i:02d}T00:00:00Z,purchase,5" for i in range(15)]  # half of them stay
    log.write_text("user_id,event_time,event_type,value\nold,2025-01-05T00:00:00Z,purchase,3\n" + "\n".join(rows))
    assert _evaluate(log, "--population", "active") == 0
    report = json.loads(capsys.readouterr().out, parse_constant=_no_constant)
    assert report["n"] == 30 and report["baselines"] == {}
    assert report["baselines_note"] == "no user of the population (active) at cutoff - horizon to fit baselines on"


def test_an_undefined_figure_is_written_as_null_never_as_nan():
    # GIVEN tiers of which one has no user in it (every score is low)
    tiers = tier_performance(np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.1, 0.2]), {"high": 0.6, "medium": 0.3})
    assert np.isnan(tiers["high"]["precision"])
    # THEN as JSON the undefined precision is null, nested or not, and nothing else changes
    text = json.dumps(json_ready({"tiers": tiers, "list": [float("inf"), 1.5, "x", None, 2]}), allow_nan=False)
    back = json.loads(text)
    assert back["tiers"]["high"] == {"share": 0.0, "precision": None, "recall": 0.0}
    assert back["tiers"]["low"]["precision"] == 0.5 and back["list"] == [None, 1.5, "x", None, 2]


class _FirstColumn(ClassifierMixin, BaseEstimator):
    """Scores every row by its first column, whatever it was fitted on: the order never changes."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        p = expit(X[:, 0])
        return np.column_stack([1 - p, p])


def _calibration_case(fit_follows_score: bool):
    """Return (fit, val) where the score is far too high for the churn rate (calibration lowers the Brier score)
    and, at validation, ranks churners first; at fitting it does so too, or the other way round."""
    rng = np.random.default_rng(0)
    x_fit = rng.normal(3.0, 1.0, 3000)
    y_fit = (rng.random(3000) < expit(2 * (x_fit - 4.5) if fit_follows_score else -2 * (x_fit - 1.5))).astype(int)
    x_val = rng.normal(3.0, 1.0, 2000)
    y_val = (rng.random(2000) < expit(2 * (x_val - 4.5))).astype(int)
    return (x_fit[:, None], y_fit), (x_val[:, None], y_val)


@pytest.mark.parametrize("fit_follows_score", [True, False])
def test_calibration_is_kept_when_it_lowers_the_brier_score_only_if_it_keeps_the_order(fit_follows_score):
    fit, val = _calibration_case(fit_follows_score)
    model = _FirstColumn().fit(*fit)
    scores = classification_metrics(val[1], model.predict_proba(val[0])[:, 1])
    chosen, method, (brier, aucs) = _calibrate(
        "first", (model, scores), fit, val, lambda: {"first": _FirstColumn()}, print
    )
    # THEN both calibrations lower the Brier score of probabilities far too high
    assert brier["sigmoid"] < brier["none"] and brier["isotonic"] < brier["none"]
    auc = classification_metrics(val[1], chosen.predict_proba(val[0])[:, 1])["auc"]
    # AND each method's AUC is recorded, so that the card can say why a better Brier score was not taken
    assert aucs["none"] == scores["auc"] and set(aucs) == {"none", "sigmoid", "isotonic"}
    assert aucs[method] == pytest.approx(auc, abs=1e-6)
    if fit_follows_score:
        # AND one that keeps the order is kept
        assert method in ("sigmoid", "isotonic") and auc >= scores["auc"] - CALIBRATION_AUC_SLACK
    else:
        # AND one learned where the order ran the other way would turn the ranking round: it is refused
        assert method == "none" and auc == scores["auc"]


def _swapped(y: np.ndarray, score: np.ndarray, pairs: int) -> np.ndarray:
    """Return `score` with `pairs` disjoint neighbours (a stayer just below a churner) swapped: each swap turns
    exactly one of the churner-stayer pairs round."""
    order = np.argsort(score)
    out, done, k = score.copy(), 0, 0
    while done < pairs:
        low, high = order[k], order[k + 1]
        if y[low] == 0 and y[high] == 1:
            out[low], out[high] = score[high], score[low]
            done, k = done + 1, k + 2
        else:
            k += 1
    return out


@pytest.mark.parametrize(("pairs", "kept"), [(14, True), (22, False)])
def test_calibration_may_cost_at_most_the_slack_of_auc(monkeypatch, pairs, kept):
    # GIVEN 60 churners and 60 stayers, so that each pair turned round costs 1/3600 of AUC, and a calibration
    # whose probabilities are far better (Brier) but which turns `pairs` pairs round: 0.0039 or 0.0061 of AUC
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 60)
    raw = y + rng.normal(0.0, 2.0, y.size)
    val = (raw[:, None], y)
    calibrated = _swapped(y, expit(raw - 1.0), pairs)

    class _Calibrated:
        def fit(self, X, labels):
            return self

        def predict_proba(self, X):
            return np.column_stack([1 - calibrated, calibrated])

    monkeypatch.setattr(training, "_calibrated", lambda estimator, method: _Calibrated())
    model = _FirstColumn().fit(*val)
    uncalibrated = expit(raw + 4.0)
    scores = classification_metrics(y, uncalibrated)
    cost = scores["auc"] - classification_metrics(y, calibrated)["auc"]
    assert cost == pytest.approx(pairs / 3600) and (cost <= CALIBRATION_AUC_SLACK) == kept
    _, method, (brier, _auc) = training._calibrate(
        "first", (model, scores), val, val, lambda: {"first": _FirstColumn()}, print
    )
    # THEN it is kept within the slack and refused past it, though it lowers the Brier score either way
    assert brier["sigmoid"] < brier["none"] and (method == "sigmoid") == kept


def _choice(scores: dict[str, dict[str, float]]) -> _Choice:
    mode = TrainingMode("mixed", 60, 300, False, ("pareto_nbd",))
    return _Choice("a", "b", None, "none", {}, {}, scores, mode)


def test_the_selection_says_how_the_winner_was_judged_and_when_brier_broke_a_tie():
    class _Validation:
        labels = np.zeros(67)
        cutoff = CUTOFF.timestamp()

    scores = {"a": {"pr_auc": 0.9444, "brier": 0.1}, "b": {"pr_auc": 0.9444, "brier": 0.2}}
    held_out = _selection_text(_choice(scores), _Validation(), out_of_time=False)
    assert held_out.startswith("a had the best held-out-user PR-AUC (0.9444 against 0.9444 for b)")
    assert "a tie, broken by the lower Brier score" in held_out and "on 67 users at 2026-03-01" in held_out
    scores["b"]["brier"] = 0.1
    assert "(a tie, in Brier score too)" in _selection_text(_choice(scores), _Validation(), out_of_time=False)
    scores["b"]["pr_auc"] = 0.944398
    close = _selection_text(_choice(scores), _Validation(), out_of_time=True)
    assert close.startswith("a had the best out-of-time PR-AUC (0.944400 against 0.944398 for b) on 67")
    scores["b"]["pr_auc"] = 0.9
    later = _selection_text(_choice(scores), _Validation(), out_of_time=True)
    assert later.startswith("a had the best out-of-time PR-AUC (0.9444 against 0.9000 for b) on 67")


def test_a_log_that_tells_no_one_apart_trains_with_a_warning_and_no_library_noise(tmp_path, capsys):
    # GIVEN 60 users whose history is one and the same event; half of them come back in the horizon
    log = tmp_path / "same.csv"
    rows = [f"u{i},2026-02-01T00:00:00Z,login" for i in range(60)]
    rows += [f"u{i},2026-03-{2 + i % 20:02d}T00:00:00Z,login" for i in range(0, 60, 2)]
    log.write_text("user_id,event_time,event_type\n" + "\n".join(rows) + "\n")
    # WHEN trained THEN the artifact is written, and train warns that it ranks no better than chance
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        assert _train(log, tmp_path / "m") == 0
    err = capsys.readouterr().err
    assert f"warning: {log}: the model ranked the 15 users it was judged on no better than chance (AUC 0.5000)" in err
    # AND --quiet means quiet: no library warning (KMeans on fewer distinct users than clusters) is raised
    assert [str(w.message) for w in raised if issubclass(w.category, ConvergenceWarning)] == []


def test_rejects_go_beside_the_named_directory_however_it_is_spelled(tmp_path, monkeypatch):
    (tmp_path / "sub" / "x").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub")
    events = tmp_path / "log.csv"
    assert rejects_path(Path("."), events) == tmp_path / "sub.rejected.csv"
    assert rejects_path(Path("x/.."), events) == tmp_path / "sub.rejected.csv"
    assert rejects_path(Path(".."), events) == tmp_path.parent / f"{tmp_path.name}.rejected.csv"
    assert rejects_path(Path("m"), events) == tmp_path / "sub" / "m.rejected.csv"
    with pytest.raises(InputError, match="--out must name a file or directory"):
        rejects_path(Path("/"), events)


@pytest.mark.parametrize("what", ["a user's file", "the input", "the input, a reject file", "a link", "a directory"])
def test_what_is_at_the_rejects_path_and_not_ours_is_never_replaced_or_removed(tmp_path, capsys, what):
    # GIVEN something of the user's where a train --out m would put its rejects
    path = tmp_path / "m.rejected.csv"
    log = _counted_log(tmp_path / "log.csv", churners=60, stayers=60)
    if what == "a user's file":
        path.write_text("my notes\n")
    elif what == "a link":  # to a reject file of an earlier run, even: writing through it would replace that
        (tmp_path / "elsewhere.csv").write_text(REJECTS)
        path.symlink_to(tmp_path / "elsewhere.csv")
    elif what == "the input, a reject file":
        path.write_text(REJECTS)
        log = path
    elif what == "a directory":
        path.mkdir()
    else:
        log = _counted_log(path, churners=60, stayers=60)
    before = path.read_bytes() if path.is_file() else None
    # WHEN trained THEN train refuses before any work, naming it, and leaves it as it was
    assert _train(log, tmp_path / "m") == 2
    assert f"{path}: already there and not the rejects of an earlier run" in _error(capsys)
    assert not (tmp_path / "m").exists()
    assert (path.read_bytes() if path.is_file() else None) == before and os.path.lexists(path)


def test_score_keeps_its_rejects_beside_its_scores_for_the_file_it_read_and_no_other(tmp_path, capsys):
    events = _with_bad_rows(_counted_log(tmp_path / "log.csv", churners=5, stayers=5))
    rejects = tmp_path / "s.csv.rejected.csv"
    argv = ["score", "--model", str(ROOT / "model_artifacts"), "--out", str(tmp_path / "s.csv"), "--quiet"]
    assert main([*argv, "--input", str(events), "--allow-missing-signals"]) == 0
    assert len(list(csv.DictReader(rejects.open()))) == 2
    # WHEN a clean file is scored THEN the earlier rejects are gone
    clean = _counted_log(tmp_path / "clean.csv", churners=5, stayers=5)
    assert main([*argv, "--input", str(clean), "--allow-missing-signals"]) == 0
    assert not rejects.exists()
    # WHEN a file that cannot be scored (every row bad) is refused THEN its rejects say why, row by row
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,event_time,event_type,value\nu1,yesterday,purchase,3\n")
    assert main([*argv, "--input", str(bad), "--allow-missing-signals"]) == 2
    assert [r["reason"] for r in csv.DictReader(rejects.open())] == ["bad_event_time"]
    # AND a file of the user's at that path is refused before any work, and left alone
    rejects.write_text("my notes\n")
    assert main([*argv, "--input", str(clean), "--allow-missing-signals"]) == 2
    assert f"{rejects}: already there and not the rejects of an earlier run" in _error(capsys)
    assert rejects.read_text() == "my notes\n"


def test_a_reject_summary_says_when_the_file_holds_only_the_first_rows():
    from chalicelib.ingest.rejects import RejectWriter

    with RejectWriter(max_rows=2) as rejects:
        for line in (2, 3, 4):
            rejects.add(line, "bad_value", "value 'x' is not a number", None)
        assert rejects.summary() == "3 rejected rows (bad_value 3); the first 2 are written, the rest only counted"
        assert rejects.summary(written=False) == "3 rejected rows (bad_value 3)"
        assert len(rejects.to_bytes().decode().splitlines()) == 3  # the header and two rows
