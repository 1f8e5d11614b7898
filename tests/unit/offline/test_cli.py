"""The contract's commands end to end on small files, and their one-line errors on bad ones."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest

from chalicelib.scoring.events import EVENT_TYPES
from churnguard_offline.cli import main
from churnguard_offline.training import labelled_set
from tests.conftest import ROOT

ARTIFACT = ROOT / "model_artifacts"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    assert (
        main(f"generate --users 3000 --days 240 --seed 3 --as-of 2026-06-01 --out {d / 'events.csv.gz'}".split()) == 0
    )
    return d


@pytest.mark.slow  # trains a model on a generated year: left to make test
def test_generate_train_score_evaluate_round_trip(workdir, capsys):
    events = workdir / "events.csv.gz"
    # train
    assert main(f"train --events {events} --cutoff 2026-05-02 --horizon-days 30 --out {workdir / 'model'}".split()) == 0
    manifest = json.loads((workdir / "model" / "manifest.json").read_text())
    assert manifest["estimator"] in manifest["candidates"]
    assert manifest["metrics"]["auc"] > 0.7
    # evaluate prints one JSON object with the contract's keys
    capsys.readouterr()
    assert (
        main(f"evaluate --model {workdir / 'model'} --events {events} --cutoff 2026-05-02 --horizon-days 30".split())
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert {"auc", "pr_auc", "brier", "lift_top_decile", "n", "churn_rate"} <= set(metrics)
    assert metrics["auc"] > 0.7 and metrics["lift_top_decile"] > 1.5
    assert set(metrics["baselines"]) == {"recency", "rfm", "bg_nbd", "pareto_nbd"}
    assert all({"auc", "brier"} <= set(b) for b in metrics["baselines"].values())
    # score writes one row per user with the contract's columns
    out = workdir / "scores.csv"
    assert main(["score", "--model", str(workdir / "model"), "--input", str(events), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    from chalicelib.ingest import read_event_file

    users = read_event_file(events).events.user_ids
    assert list(rows[0]) == [
        "user_id",
        "as_of",
        "churn_probability",
        "risk_tier",
        "value_tier",
        "reasons",
        "action",
        "model_version",
    ]
    assert len(rows) == len({r["user_id"] for r in rows}) == len(users) > 2500
    assert len({r["as_of"] for r in rows}) == 1
    assert all(r["action"] == "" for r in rows if r["risk_tier"] == "low")


def test_labels_do_not_see_past_the_cutoff(workdir):
    from chalicelib.ingest import read_event_file

    events = read_event_file(workdir / "events.csv.gz").events
    cutoff = events.time.max() - 30 * 86400
    base = labelled_set(events, cutoff, 30)
    # GIVEN the same history with every post-cutoff event moved later still
    shifted = events.select(np.ones(len(events), dtype=bool))
    after = shifted.time > cutoff
    shifted.time = np.where(after, shifted.time + 5 * 86400, shifted.time)
    again = labelled_set(shifted, cutoff, 30)
    # THEN features are identical: nothing after the cutoff leaks into them
    np.testing.assert_array_equal(base.features, again.features)
    assert len(EVENT_TYPES) > 0


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_score_of_missing_file_exits_2_naming_it(tmp_path, capsys):
    assert (
        main(
            ["score", "--model", str(ARTIFACT), "--input", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.csv")]
        )
        == 2
    )
    assert "nope.csv: no such file" in _error_line(capsys)


def test_score_of_file_without_required_columns_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,when\nu1,2026-01-01\n")
    assert main(["score", "--model", str(ARTIFACT), "--input", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    line = _error_line(capsys)
    assert "bad.csv" in line and "event_time" in line


def test_bad_date_argument_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--events", "x.csv", "--cutoff", "soon", "--horizon-days", "30", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "soon" in _error_line(capsys)


def test_train_with_horizon_past_the_data_exits_2(workdir, tmp_path, capsys):
    events = workdir / "events.csv.gz"
    assert main(f"train --events {events} --cutoff 2026-05-20 --horizon-days 30 --out {tmp_path / 'm'}".split()) == 2
    assert "horizon" in _error_line(capsys)


def test_train_with_too_few_churners_exits_2(tmp_path, capsys):
    small = tmp_path / "small.csv"
    small.write_text(
        "user_id,event_time,event_type\n"
        + "".join(f"u{i},2026-01-0{d}T10:00:00Z,login\n" for i in range(20) for d in range(1, 9))
    )
    assert main(f"train --events {small} --cutoff 2026-01-03 --horizon-days 3 --out {tmp_path / 'm'}".split()) == 2
    assert "too few" in _error_line(capsys)


def test_rejected_rows_are_written_beside_the_scores(tmp_path, capsys):
    f = tmp_path / "mixed.csv"
    f.write_text(
        "user_id,event_time,event_type,value\nu1,2026-01-01T00:00:00Z,purchase,10\n"
        "u2,garbage,login,\n,2026-01-01,login,\n"
    )
    out = str(tmp_path / "s.csv")
    assert main(["score", "--model", str(ARTIFACT), "--input", str(f), "--out", out, "--allow-missing-signals"]) == 0
    rejected = list(csv.DictReader((tmp_path / "s.csv.rejected.csv").open()))
    assert [r["reason"] for r in rejected] == ["bad_event_time", "missing_user_id"]
    assert len(list(csv.DictReader((tmp_path / "s.csv").open()))) == 1


def test_score_refuses_a_log_without_the_signals_the_model_needs(tmp_path, capsys):
    # GIVEN a purchases-only export and the packaged model, trained on logs with every signal
    f = tmp_path / "orders.csv"
    f.write_text("user_id,event_time,event_type,value\nu1,2026-01-01T00:00:00Z,purchase,10\n")
    out = tmp_path / "s.csv"
    # WHEN it is scored THEN it is refused, naming what is missing
    assert main(["score", "--model", str(ARTIFACT), "--input", str(f), "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert "orders.csv" in line and "login" in line and "session" in line
    # AND the user can insist
    assert (
        main(["score", "--model", str(ARTIFACT), "--input", str(f), "--out", str(out), "--allow-missing-signals"]) == 0
    )


def test_score_without_as_of_rejects_events_more_than_a_day_past_the_clock(tmp_path, capsys):
    # GIVEN a log whose latest real event is in 2026, plus one row dated year 9999
    f = tmp_path / "poisoned.csv"
    f.write_text(
        "user_id,event_time,event_type,value\nu1,2026-01-01T00:00:00Z,purchase,10\n"
        "u2,2026-01-02T12:00:00Z,purchase,5\nu3,9999-12-31T00:00:00Z,purchase,7\n"
    )
    out = tmp_path / "s.csv"

    # WHEN it is scored without --as-of
    assert (
        main(["score", "--model", str(ARTIFACT), "--input", str(f), "--out", str(out), "--allow-missing-signals"]) == 0
    )

    # THEN the year-9999 row is rejected as future-dated and the others are scored as of the latest real event
    rejected = list(csv.DictReader((tmp_path / "s.csv.rejected.csv").open()))
    assert [(r["user_id"], r["reason"]) for r in rejected] == [("u3", "future_event_time")]
    rows = list(csv.DictReader(out.open()))
    assert {r["user_id"] for r in rows} == {"u1", "u2"}
    assert {r["as_of"] for r in rows} == {"2026-01-02T12:00:00Z"}


def test_score_with_as_of_takes_it_as_the_limit_whatever_the_clock(tmp_path, capsys):
    # GIVEN a log with events in the far future
    f = tmp_path / "later.csv"
    f.write_text("user_id,event_time,event_type,value\nu1,2090-01-01T00:00:00Z,purchase,10\n")
    out = tmp_path / "s.csv"

    # WHEN it is scored as of a date after them THEN they are all scored
    args = ["score", "--model", str(ARTIFACT), "--input", str(f), "--out", str(out), "--allow-missing-signals"]
    assert main([*args, "--as-of", "2090-06-01"]) == 0
    assert [r["user_id"] for r in csv.DictReader(out.open())] == ["u1"]


@pytest.mark.parametrize(
    "argv",
    [
        "train --events e.csv --cutoff 2026-01-01 --horizon-days 3 --out m",
        "evaluate --events e.csv --cutoff 2026-01-01 --horizon-days 3",
    ],
    ids=["train", "evaluate"],
)
def test_train_and_evaluate_read_no_event_more_than_a_day_past_the_clock(argv, monkeypatch, capsys):
    # GIVEN the offline reads stubbed to record the limit they are given
    from chalicelib.errors import InputError
    from churnguard_offline import cli

    seen = []

    def record(path, not_after, *rest):
        seen.append(not_after)
        raise InputError("stop here")

    monkeypatch.setattr(cli, "_read", record)
    monkeypatch.setattr(cli, "_read_and_load", record)

    # WHEN the command runs (it has no --as-of)
    before = time.time()
    assert main(argv.split()) == 2
    after = time.time()

    # THEN events later than a day past the wall clock are refused
    [limit] = seen
    assert before + 86400 <= limit <= after + 86400
