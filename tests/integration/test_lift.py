"""Outcome tracking end to end: who was messaged or held out, who came back in later files, and the lift."""

from __future__ import annotations

import copy
import json

import numpy as np

from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook
from chalicelib.scoring.events import SECONDS_PER_DAY, TYPE_CODE, EventBatch
from churnguard_offline.cli import main
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline

T0 = AS_OF.timestamp()


def test_the_lift_report_recovers_a_planted_treatment_effect(aws, population, tmp_path, no_sleep, capsys):
    # GIVEN a playbook holding out half of each tier, and a file that exposes the actionable users
    spec = copy.deepcopy(json.loads(DEFAULT_PLAYBOOK.read_text()))
    spec["holdout"]["share"] = {"high": 0.5, "medium": 0.5}
    pipeline = make_pipeline(aws.settings)
    pipeline.scorer.playbook = Playbook.from_spec(spec, "half-holdout")
    aws.land("incoming/history.csv", csv_bytes(population, tmp_path))
    first = pipeline.process_object("incoming/history.csv", None, T0)
    exposed = {i["user_id"]: i["exposure_group"] for i in aws.items(aws.settings.risk_table) if "exposed_at" in i}
    assert first["suppressed"]["holdout"] == sum(g == "holdout" for g in exposed.values()) > 20

    # WHEN a later file shows messaged users coming back 80% of the time and held-out users 30%
    rng = np.random.default_rng(11)
    chance = {"treated": 0.8, "holdout": 0.3}
    back = [u for u, group in sorted(exposed.items()) if rng.random() < chance[group]]
    returns = EventBatch(
        user_ids=back,
        user_index=np.arange(len(back), dtype=np.int32),
        time=np.full(len(back), T0 + 5 * SECONDS_PER_DAY),
        type_code=np.full(len(back), TYPE_CODE["login"], dtype=np.int8),
        value=np.full(len(back), np.nan),
    )
    aws.land("incoming/week.csv", csv_bytes(returns, tmp_path))
    pipeline.process_object("incoming/week.csv", None, T0 + 6 * SECONDS_PER_DAY)

    # THEN, once the horizon has passed, the report finds the effect: its interval holds 0.5 and excludes 0
    report = pipeline.lift_report(as_of=T0 + 40 * SECONDS_PER_DAY)
    overall = report["rows"][0]
    assert overall["treated"]["returned"] == sum(exposed[u] == "treated" for u in back)
    assert overall["holdout"]["returned"] == sum(exposed[u] == "holdout" for u in back)
    lo, hi = overall["lift_ci95"]
    assert 0 < lo < 0.5 < hi
    assert report["horizon_days"] == 30.0
    # AND before the horizon passes, users who have not come back are pending, not lost
    early = pipeline.lift_report(as_of=T0 + 10 * SECONDS_PER_DAY)["rows"][0]
    assert early["treated"]["lost"] == early["holdout"]["lost"] == 0

    # AND the command line and the schedule give the same report
    assert main(["report", "--as-of", "2026-07-11"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0] == overall
    pipeline.run_schedule(T0 + 40 * SECONDS_PER_DAY)
    scheduled = json.loads(aws.get("reports/lift.json"))["rows"][0]
    # (the schedule, its cooldowns over, exposes users anew: their outcomes are pending; the rest agree)
    assert (scheduled["lift"], scheduled["lift_ci95"]) == (overall["lift"], overall["lift_ci95"])
    assert scheduled["treated"]["pending"] > 0
