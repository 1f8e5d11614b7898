"""Small customers train: a buy-till-you-die model alone below the learned model's threshold, a contest in the
middle, today's training above; a log with nothing to judge is refused by name, never with a traceback."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from chalicelib.scoring.artifact import load_model
from chalicelib.scoring.model_version import decision_fields
from chalicelib.scoring.scorer import Scorer
from chalicelib.scoring.state import build_state
from churnguard_offline.cli import main
from churnguard_offline.generate import generate_events, write_event_log
from churnguard_offline.small_data import (
    LEARNED_MIN_CLASS_ROWS,
    MIN_JUDGED_ROWS,
    MIXED_BELOW,
    TooFewExamplesError,
    training_mode,
)
from churnguard_offline.training import _pool, candidates
from tests.package.invoke_packaged import model_globals
from tests.unit.scoring.test_artifact_modules import undeployed_modules

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
CUTOFF = "2026-10-02"


def _labels(churners: int, stayers: int) -> np.ndarray:
    return np.array([1] * churners + [0] * stayers)


def _log(tmp_path_factory, users: int, kind: str = "multi", seed: int = 5, days: int = 365):
    path = tmp_path_factory.mktemp(f"small-{users}-{kind}") / "events.csv"
    write_event_log(generate_events(users, days, seed, AS_OF, kind=kind), path)
    return path


def _train(events, out, *extra: str) -> int:
    return main(
        ["train", "--events", str(events), "--cutoff", CUTOFF, "--horizon-days", "30", "--out", str(out), *extra]
    )


def _manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines[-1]


@pytest.mark.parametrize(
    ("churners", "stayers", "mode"),
    [
        (LEARNED_MIN_CLASS_ROWS - 1, 5000, "btyd_only"),
        (5000, LEARNED_MIN_CLASS_ROWS - 1, "btyd_only"),
        (LEARNED_MIN_CLASS_ROWS, LEARNED_MIN_CLASS_ROWS, "mixed"),
        (MIXED_BELOW - 1, 5000, "mixed"),
        (MIXED_BELOW, MIXED_BELOW, "learned"),
    ],
)
def test_the_training_mode_follows_the_smaller_class_of_the_rows_to_fit_on(churners, stayers, mode):
    chosen = training_mode(_labels(churners, stayers), out_of_time=True)
    assert chosen.mode == mode
    record = chosen.record()
    # THEN the manifest's record names the mode, the counts and the thresholds they were held against
    assert (record["mode"], record["churners"], record["stayers"]) == (mode, churners, stayers)
    assert record["thresholds"] == {
        "learned_min_per_class": LEARNED_MIN_CLASS_ROWS,
        "btyd_competes_below_per_class": MIXED_BELOW,
        "judged_min_per_class": MIN_JUDGED_ROWS,
    }
    assert f"{churners} churners and {stayers} stayers" in record["reason"]


def test_btyd_models_are_chosen_between_out_of_time_and_the_standard_one_taken_without_a_later_origin():
    assert training_mode(_labels(20, 80), out_of_time=True).btyd_models == ("bg_nbd", "pareto_nbd")
    single = training_mode(_labels(20, 80), out_of_time=False)
    assert single.btyd_models == ("pareto_nbd",)
    assert "single origin" in single.reason() and "Pareto/NBD" in single.reason()
    assert training_mode(_labels(MIXED_BELOW, 5000), out_of_time=True).btyd_models == ()


def test_each_mode_lets_its_own_candidates_compete_and_a_large_log_exactly_todays():
    def pool(churners: int) -> list[str]:
        return list(_pool(0, 30.0, training_mode(_labels(churners, 5000), out_of_time=True)))

    assert pool(MIXED_BELOW) == list(candidates(0, 30.0))
    assert pool(MIXED_BELOW - 1) == [*candidates(0, 30.0), "bg_nbd", "pareto_nbd"]
    assert pool(LEARNED_MIN_CLASS_ROWS - 1) == ["bg_nbd", "pareto_nbd"]


@pytest.mark.parametrize(("churners", "stayers"), [(MIN_JUDGED_ROWS - 1, 500), (500, 0), (0, 0)])
def test_too_few_examples_to_judge_any_model_are_refused_naming_the_counts(churners, stayers):
    with pytest.raises(TooFewExamplesError, match=f"{churners} churners and {stayers} stayers"):
        training_mode(_labels(churners, stayers), out_of_time=True)


def test_a_sample_too_small_for_a_learned_model_is_refused_not_given_a_btyd_model():
    # A sample is small because N is: the way out is a larger sample, not a weaker model.
    with pytest.raises(TooFewExamplesError, match="need at least 50 of each"):
        training_mode(_labels(30, 200), out_of_time=True, sampled=True)
    assert training_mode(_labels(60, 200), out_of_time=True, sampled=True).mode == "mixed"


@pytest.fixture(scope="module")
def btyd_artifact(tmp_path_factory):
    """A 120-user log trained with two origins: fewer than 50 churners to fit on, so a BTYD model alone."""
    events = _log(tmp_path_factory, 120)
    out = events.parent / "model"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = _train(events, out, "--max-origins", "2", "--quiet")
    return events, out, status, stderr.getvalue()


def test_a_small_log_gets_a_btyd_model_chosen_out_of_time_and_a_card_saying_so(btyd_artifact):
    _, out, status, _ = btyd_artifact
    assert status == 0
    manifest = _manifest(out)
    mode = manifest["training_mode"]
    # THEN the mode is BTYD only, both BTYD models competed at the later origin, and the best one was kept
    assert mode["mode"] == "btyd_only" and mode["churners"] < LEARNED_MIN_CLASS_ROWS
    assert set(manifest["candidates"]) == {"bg_nbd", "pareto_nbd"} == set(mode["btyd_candidates"])
    assert manifest["validation"]["kind"] == "out_of_time"
    best = max(manifest["candidates"], key=lambda n: manifest["candidates"][n]["pr_auc"])
    assert manifest["estimator"] == best
    # AND every figure is measured: nothing NaN in the metrics
    assert all(np.isfinite(manifest["metrics"][k]) for k in ("auc", "pr_auc", "brier", "log_loss", "lift_top_decile"))
    # AND the model card says which mode and why
    card = (out / "model_card.md").read_text()
    assert "Training mode: a buy-till-you-die model alone (`btyd_only`)" in card
    assert f"{mode['churners']} churners and {mode['stayers']} stayers to fit on" in card
    assert all((out / png).exists() for png in ("calibration.png", "cumulative_gains.png", "feature_importance.png"))


def test_the_warning_of_a_btyd_only_training_names_the_file_and_the_counts(btyd_artifact):
    events, out, _, stderr = btyd_artifact
    warning = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    mode = _manifest(out)["training_mode"]
    assert len(warning) == 1 and str(events) in warning[0]
    assert f"{mode['churners']} churners and {mode['stayers']} stayers" in warning[0]
    assert "buy-till-you-die model alone" in warning[0]
    assert "no better than chance" not in stderr  # this model ranks: the chance warning is for one that does not


def test_a_btyd_artifact_names_only_deployed_code_loads_and_scores_with_reasons(btyd_artifact, tmp_path):
    events, out, _, _ = btyd_artifact
    # THEN its pickle refers to nothing the Lambda package leaves out
    assert undeployed_modules(model_globals(str(out / "model.joblib"))) == []
    # AND it loads through the verified path, and the training mode is description, not decision
    model = load_model(out)
    assert "training_mode" not in decision_fields(model.manifest)
    # AND the offline score command scores every user, the at-risk ones with reasons
    scores = tmp_path / "scores.csv"
    assert main(["score", "--model", str(out), "--input", str(events), "--out", str(scores), "--quiet"]) == 0
    rows = list(csv.DictReader(scores.open()))
    assert rows and all(0.0 <= float(r["churn_probability"]) <= 1.0 for r in rows)
    assert {r["model_version"] for r in rows} == {model.model_version}
    assert any(r["reasons"] for r in rows if r["risk_tier"] != "low")
    # AND the scorer the functions use gives the same probabilities
    from chalicelib.ingest import read_event_file

    state = build_state(read_event_file(events).events)
    by_user = {r["user_id"]: float(r["churn_probability"]) for r in rows}
    scored = Scorer(model).score(state, datetime.fromisoformat(rows[0]["as_of"]).timestamp())
    np.testing.assert_allclose(scored.probability, [by_user[u] for u in scored.user_ids], atol=1e-6)


def test_a_single_origin_small_log_gets_the_standard_btyd_model(tmp_path_factory):
    events = _log(tmp_path_factory, 60)
    out = events.parent / "m"
    assert _train(events, out, "--max-origins", "1", "--quiet") == 0
    manifest = _manifest(out)
    assert manifest["training_mode"]["mode"] == "btyd_only"
    assert manifest["estimator"] == "pareto_nbd" and list(manifest["candidates"]) == ["pareto_nbd"]
    assert manifest["validation"]["kind"] == "held_out_users"
    assert "Pareto/NBD was the only candidate" in manifest["selection"]
    load_model(out)


def test_thirty_users_over_a_year_train_through_the_mixed_contest(tmp_path_factory, capsys):
    # GIVEN 30 users and eight origins: the stacked rows hold 50 of each class, fewer than 2,500
    events = _log(tmp_path_factory, 30, seed=2)
    out = events.parent / "m"
    assert _train(events, out, "--quiet") == 0
    manifest = _manifest(out)
    # THEN learned and BTYD candidates competed, the best out of time won, and the artifact is whole and loads
    assert manifest["training_mode"]["mode"] == "mixed"
    scores = manifest["candidates"]
    assert set(scores) == {*candidates(0, 30.0), "bg_nbd", "pareto_nbd"}
    assert manifest["estimator"] == max(scores, key=lambda n: (scores[n]["pr_auc"], -scores[n]["brier"]))
    assert np.isfinite(manifest["metrics"]["auc"]) and manifest["segments"]["activity"]["centres"]
    load_model(out)
    assert "warning: " in capsys.readouterr().err


def test_a_small_purchase_log_whose_last_days_are_quiet_trains_with_data_end(tmp_path_factory, capsys):
    # GIVEN a purchases log whose export ends 2026-11-01 but whose last week has no event
    batch = generate_events(60, 365, 5, AS_OF, kind="purchases")
    quiet = batch.select(batch.time <= (AS_OF - timedelta(days=7)).timestamp())
    path = tmp_path_factory.mktemp("quiet") / "events.csv"
    write_event_log(quiet, path)
    horizon = ["--cutoff", "2026-10-02", "--horizon-days", "30", "--max-origins", "2", "--quiet"]
    # WHEN trained without the export's end THEN the horizon is refused; with it, a BTYD model is written
    assert main(["train", "--events", str(path), *horizon, "--out", str(path.parent / "a")]) == 2
    assert "--data-end" in _error_line(capsys)
    assert (
        main(["train", "--events", str(path), *horizon, "--out", str(path.parent / "b"), "--data-end", "2026-11-01"])
        == 0
    )
    assert _manifest(path.parent / "b")["training_mode"]["mode"] == "btyd_only"


def _write(path, rows: list[tuple[str, str]]) -> None:
    path.write_text("user_id,event_time,event_type\n" + "".join(f"{u},{t},purchase\n" for u, t in rows))


DEGENERATE = {
    "one user": [("u1", f"2026-0{m}-01T00:00:00Z") for m in range(1, 10)],
    "every event at one instant": [(f"u{i}", "2026-05-01T12:00:00Z") for i in range(40)],
    "every user seen once": [(f"u{i}", f"2026-0{1 + i % 8}-{1 + i % 27:02d}T00:00:00Z") for i in range(60)],
    "no churner": [(f"u{i}", f"2026-0{m}-{1 + i:02d}T00:00:00Z") for i in range(20) for m in range(1, 10)],
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_a_degenerate_log_is_refused_with_one_line_naming_the_counts_and_no_artifact(name, tmp_path, capsys):
    log = tmp_path / "log.csv"
    _write(log, DEGENERATE[name])
    argv = ["train", "--events", str(log), "--cutoff", "2026-06-01", "--horizon-days", "30", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "m"), "--data-end", "2026-09-30"]) == 2
    line = _error_line(capsys)
    assert str(log) in line and "too few examples to judge a model" in line
    assert "churners and" in line and "stayers" in line
    assert not (tmp_path / "m" / "manifest.json").exists()


@pytest.mark.slow  # trains the contest on 671 users: left to make test
def test_a_671_user_purchase_log_with_a_six_month_horizon_trains_loads_and_scores(tmp_path_factory, capsys):
    # GIVEN a year of purchases of 671 users and a six-month horizon: one origin, a few dozen churners to fit on
    events = _log(tmp_path_factory, 671, kind="purchases")
    out = events.parent / "m"
    argv = ["train", "--events", str(events), "--cutoff", "2026-05-02", "--horizon-days", "180", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    manifest = _manifest(out)
    mode = manifest["training_mode"]
    # THEN the counts decide the mode, the small-data warning names the file, and the artifact scores every user
    assert mode["mode"] == ("btyd_only" if min(mode["churners"], mode["stayers"]) < 50 else "mixed")
    assert "pareto_nbd" in manifest["candidates"]
    assert f"warning: {events}" in capsys.readouterr().err
    scores = out.parent / "scores.csv"
    assert main(["score", "--model", str(out), "--input", str(events), "--out", str(scores), "--quiet"]) == 0
    load_model(out)
    assert len(list(csv.DictReader(scores.open()))) == len({r["user_id"] for r in csv.DictReader(events.open())})
