"""A scheduled run on fakes writes its report: every section, drift and its metrics, and what changed since the last."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib.errors import InputError
from chalicelib.observability import FEATURE_DRIFT_PSI_MAX, NO_UNIT, SCORE_DRIFT_PSI
from chalicelib.reporting.drift import NO_DISTRIBUTION
from chalicelib.reporting.render import SECTIONS
from chalicelib.runs.schedule_run import schedule_run_id
from chalicelib.scoring.artifact import MODEL_CACHE
from chalicelib.scoring.scorer import Scorer
from churnguard_offline.generate import write_event_log
from churnguard_offline.report import render
from tests.unit.runs.test_runs_on_fakes import AS_OF, Recorder, World

LATER = (AS_OF + timedelta(days=60)).timestamp()
WEEK_AFTER = LATER + 7 * 86400
BAD_ROWS = ",2026-05-01T00:00:00Z,login,\nu-late,yesterday,login,\n"


def scheduled(world: World, population, tmp_path, model=None) -> World:
    """Return a world whose population's history was scored, a file of two bad rows landed in the day before the
    schedule, and the schedule ran."""
    if model is not None:
        world.pipeline.ctx.scorer = Scorer(model)
    path = tmp_path / "events.csv"
    write_event_log(population, path)
    world.bucket.land("incoming/history.csv", path.read_bytes())
    assert world.process("incoming/history.csv")["status"] == "succeeded"
    world.now = LATER - 3600
    world.bucket.land("incoming/bad.csv", b"user_id,event_time,event_type,value\n" + BAD_ROWS.encode())
    assert world.process("incoming/bad.csv")["status"] == "rejected"
    world.now = LATER
    world.pipeline.run_schedule(at=LATER)
    return world


def test_a_scheduled_run_writes_its_report_with_every_section(population, model, tmp_path):
    # GIVEN a history scored from a file with two bad rows WHEN the schedule runs
    world = scheduled(World(metrics=Recorder()), population, tmp_path, model)
    run_id = schedule_run_id(LATER)
    content, page = world.bucket.reports[run_id]
    # THEN the run's report is written, also as the latest, and its record says where
    assert world.bucket.reports["latest"] == (content, page)
    record = world.bucket.runs[run_id]
    assert record["run_report"] == f"s3://bucket/reports/{run_id}.html"
    # AND it has every section, with figures that agree with the run's record
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in page
    assert content["users_scored"] == record["users_scored"] == len(population.user_ids)
    assert sum(b["users"] for b in content["score_distribution"]["buckets"]) == record["users_scored"]
    grid = content["tiers"]["risk_x_value"]
    assert sum(sum(row.values()) for row in grid.values()) == record["users_scored"]
    assert sum(r["users"] for r in content["suppressed"]) == sum(record["suppressed"].values())
    claimed = sum(r["messages"] for r in content["messages"]["by_channel_action"])
    assert claimed == record["messages_claimed"] > 0
    assert content["lift"] == world.bucket.lift
    assert content["drivers"]["overall"] and content["drivers"]["by_rfm_segment"]
    # AND the data-quality section counts the day's file runs: the rejected rows by reason (not the history's,
    # which ran 60 days before)
    quality = content["data_quality"]
    assert quality["file_runs"] == 1 and quality["rows_rejected"] == 2 and quality["files_all_rows_rejected"] == 1
    assert quality["rejected_by_reason"] == {"missing_user_id": 1, "bad_event_time": 1}
    # AND the drift section and its metrics: the score's PSI and the worst feature's
    drift = content["drift"]
    assert drift["available"] and len(drift["features"]) == len(model.manifest["feature_names"])
    added = {
        kw["name"]: kw
        for _, _, kw in world.pipeline.ctx.metrics.calls
        if kw.get("name") in (SCORE_DRIFT_PSI, FEATURE_DRIFT_PSI_MAX)
    }
    assert added[SCORE_DRIFT_PSI]["value"] == drift["score"]["psi"]
    assert added[FEATURE_DRIFT_PSI_MAX]["value"] == drift["worst_feature"]["psi"]
    assert {kw["unit"] for kw in added.values()} == {NO_UNIT}


def test_the_next_run_shows_the_change_of_the_drivers_since_this_one(population, model, tmp_path):
    world = scheduled(World(), population, tmp_path, model)
    first = world.bucket.reports["latest"][0]
    # WHEN the schedule runs a week later
    world.now = WEEK_AFTER
    world.pipeline.run_schedule(at=WEEK_AFTER)
    second = world.bucket.reports["latest"][0]
    # THEN its drivers are compared with the first run's, share by share
    assert second["run_id"] == schedule_run_id(WEEK_AFTER)
    assert second["drivers"]["previous_run_id"] == first["run_id"]
    before = {r["reason"]: r["share"] for r in first["drivers"]["overall"]}
    for row in second["drivers"]["overall"]:
        assert row["share_change"] == pytest.approx(row["share"] - before.get(row["reason"], 0.0), abs=2e-4)
    # AND the first run's report is still there under its own id
    assert world.bucket.reports[first["run_id"]][0] == first


def test_a_model_without_a_training_distribution_reports_so_and_publishes_no_drift(population, tmp_path):
    # GIVEN a model whose manifest predates the training distribution
    committed = MODEL_CACHE.get()
    older = replace(committed, manifest={k: v for k, v in committed.manifest.items() if k != "training_distribution"})
    world = scheduled(World(metrics=Recorder()), population, tmp_path, older)
    content, page = world.bucket.reports["latest"]
    # THEN the run still succeeds, and the drift section says why it is empty
    assert world.bucket.runs[schedule_run_id(LATER)]["status"] == "succeeded"
    assert content["drift"] == {"available": False, "why": NO_DISTRIBUTION}
    assert "no training distribution in this model&#x27;s manifest" in page
    names = {kw.get("name") for _, _, kw in world.pipeline.ctx.metrics.calls}
    assert not names & {SCORE_DRIFT_PSI, FEATURE_DRIFT_PSI_MAX}


def test_a_redo_of_the_same_run_keeps_its_comparison(population, model, tmp_path):
    world = scheduled(World(), population, tmp_path, model)
    world.now = WEEK_AFTER
    world.pipeline.run_schedule(at=WEEK_AFTER)
    compared = world.bucket.reports["latest"][0]["compared_with"]
    # WHEN the same run's report is written again (a redo of its bookkeeping)
    from chalicelib.reporting.publish import publish_report

    record = {**world.bucket.runs[schedule_run_id(WEEK_AFTER)], "aggregates": {}}
    publish_report(world.pipeline.ctx, record, None)
    # THEN it is still compared with the run before it, not with itself
    assert world.bucket.reports["latest"][0]["compared_with"] == compared
    assert compared["run_id"] == schedule_run_id(LATER)


def test_the_offline_command_renders_the_stored_report_with_the_lift_it_computes(population, model, tmp_path):
    world = scheduled(World(), population, tmp_path, model)
    stored = world.bucket.run_report_latest()
    lift = {"horizon_days": 30.0, "as_of": "now", "since": None, "rows": []}
    # THEN json is today's lift report with the run report added; html and md show the run report
    assert render("json", lift, stored, "s3://b/reports/").startswith("{")
    out = render("json", lift, None, "s3://b/reports/")
    assert '"run_report": null' in out and '"rows": []' in out
    page = render("html", lift, stored, "s3://b/reports/")
    assert all(f'id="{sid}"' in page for sid, _ in SECTIONS) and "no lift report" not in page
    assert render("md", lift, stored, "s3://b/reports/").count("## ") == len(SECTIONS)
    # AND before any scheduled run, html or md say there is none yet
    with pytest.raises(InputError, match=r"no run report in s3://b/reports/ yet"):
        render("html", lift, None, "s3://b/reports/")
