"""The report's aggregates add up: chunks, a schedule's segments and a run in one invocation give the same figures."""

from __future__ import annotations

import random

import numpy as np

from chalicelib.reporting.aggregates import (
    HISTOGRAM_BUCKETS,
    bin_counts,
    collect,
    histogram_bucket,
    messages_by_channel_action,
)
from chalicelib.runs.records import add_counts
from chalicelib.runs.schedule_run import schedule_run_id
from chalicelib.scoring.artifact import MODEL_CACHE
from chalicelib.scoring.scorer import Scorer
from chalicelib.scoring.state import build_state
from tests.unit.runs.test_runs_on_fakes import World
from tests.unit.runs.test_schedule_map import LATER, drive, finish, kill_once, map_world, plan, seeded


def scores_of(model, population):
    state = build_state(population)
    return Scorer(model).score(state, LATER)


def test_probabilities_fall_in_twenty_equal_buckets_with_one_in_the_last():
    found = histogram_bucket(np.array([0.0, 0.0499, 0.05, 0.5, 0.95, 0.9999, 1.0]))
    assert found.tolist() == [0, 0, 1, 10, 19, 19, 19] and HISTOGRAM_BUCKETS == 20


def test_bins_follow_searchsorted_right_as_the_manifest_format_says():
    # a value equal to an edge falls in the bin above it
    assert bin_counts(np.array([0.0, 1.0, 1.5, 2.0, 9.0]), [1.0, 2.0]) == {"0": 1, "1": 2, "2": 2}


def test_the_aggregates_of_parts_sum_to_those_of_the_whole(model, population):
    # GIVEN one scoring of every user
    scores = scores_of(model, population)
    training = model.manifest["training_distribution"]
    names = model.manifest["feature_names"]
    everyone = list(range(len(scores)))
    whole = collect(scores, everyone, training, names)
    # WHEN the users are split at random into three parts, each collected on its own, and summed
    random.Random(5).shuffle(everyone)
    summed: dict = {}
    for part in (everyone[:10], everyone[10:70], everyone[70:]):
        add_counts(summed, collect(scores, part, training, names))
    # THEN the sums are the whole's, figure for figure
    assert summed == whole
    assert whole["users"] == len(scores) == sum(whole["score_histogram"].values())
    assert sum(whole["drift_bins"]["score"].values()) == len(scores)
    assert set(whole["drift_bins"]["features"]) == set(names)
    at_risk = sum(bool(r) for r in scores.reasons)
    assert sum(whole["drivers"]["overall"].values()) == at_risk
    assert sum(sum(g.values()) for g in whole["drivers"]["by_rfm_segment"].values()) == at_risk


def test_messages_are_counted_by_channel_and_action_code():
    pairs = [("email", "win_back_email"), ("push", "re_engage_push"), ("email", "win_back_email")]
    assert messages_by_channel_action(pairs) == {"email": {"win_back_email": 2}, "push": {"re_engage_push": 1}}
    assert messages_by_channel_action([]) == {}


def test_without_a_training_distribution_no_drift_bins_are_counted(population):
    scores = scores_of(MODEL_CACHE.get(), population)
    out = collect(scores, list(range(len(scores))), None, [])
    assert "drift_bins" not in out and out["users"] == len(scores)


def test_nobody_scored_counts_nothing(model, population):
    scores = scores_of(model, population)
    out = collect(scores, [], model.manifest["training_distribution"], model.manifest["feature_names"])
    assert out == {
        "users": 0,
        "score_histogram": {},
        "drivers": {"overall": {}, "by_rfm_segment": {}, "by_activity_cluster": {}},
    }


def test_a_schedule_over_8_segments_reports_the_single_invocation_figures(model, population, tmp_path):
    # GIVEN the same history in two worlds, one scheduled in one invocation, one through the map (one child killed)
    single = seeded(World(), population, tmp_path)
    single.pipeline.ctx.scorer = Scorer(model)
    single.pipeline.run_schedule(at=LATER)
    mapped = seeded(map_world(), population, tmp_path)
    mapped.pipeline.ctx.scorer = Scorer(model)
    items = plan(mapped)
    random.Random(3).shuffle(items)
    kill_once(mapped, on_call=2)
    assert drive(mapped, items) == []
    summary = finish(mapped)
    # THEN both wrote a report, and every figure in it is the same, drift included
    run_id = schedule_run_id(LATER)
    one, _ = single.bucket.reports[run_id]
    many, _ = mapped.bucket.reports[run_id]
    assert summary["run_report"] == mapped.bucket.url(f"reports/{run_id}.html")
    # (suppressed is the runs' own count, by the reason the contact policy gives: a child redone after the kill finds
    # its holdout user already exposed at this as_of and counts a cooldown; the report shows it as the run counted it)
    volatile = {"generated_at", "data_quality", "status", "compared_with", "suppressed"}
    assert {k: v for k, v in many.items() if k not in volatile} == {k: v for k, v in one.items() if k not in volatile}
    assert sum(b["users"] for b in many["score_distribution"]["buckets"]) == many["users_scored"] > 0
    assert many["drift"]["available"] and many["drift"]["features"]
    # AND the aggregates went into the report, not into the run's record
    assert "aggregates" not in mapped.bucket.runs[run_id] and "aggregates" not in summary


def test_drift_counts_only_the_users_seen_within_the_training_populations_lookback(model, population):
    # GIVEN a training distribution measured on users seen within a lookback, and a run scoring users both sides of it
    scores = scores_of(model, population)
    names = model.manifest["feature_names"]
    recency = scores.features[:, names.index("recency_days")]
    lookback = float(np.median(recency))
    seen = int((recency <= lookback).sum())
    assert 0 < seen < len(scores)
    training = {**model.manifest["training_distribution"], "lookback_days": lookback}
    # WHEN the run's drift bins are counted
    bins = collect(scores, list(range(len(scores))), training, names)["drift_bins"]
    # THEN only the users seen within the lookback are in them, while every user is in the score histogram
    assert sum(bins["score"].values()) == seen
    assert all(sum(f.values()) == seen for f in bins["features"].values())
    without = collect(scores, list(range(len(scores))), model.manifest["training_distribution"], names)
    assert sum(without["drift_bins"]["score"].values()) == len(scores)
