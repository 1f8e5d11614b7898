"""A risk item's `holdout` says whether the user's current exposure is the control group's, on every run: also
while a cooldown, an opt-out or a lower tier holds their next message. The lift report's groups are untouched."""

from __future__ import annotations

import copy
import json

import pytest

from chalicelib.retention.outcomes import HOLDOUT, TREATED, distinct_exposures, exposure_from_item
from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook
from churnguard_offline.generate import generate_events
from tests.unit.runs.test_runs_on_fakes import AS_OF, World

DAY = 86400.0
# Runs over a month: the file, then schedules inside and past the 7-day (high) and 14-day (medium) cooldowns.
SCHEDULE_DAYS = (3, 8, 15, 22)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Return the world after each run of a month over 240 users, a third of each tier held out."""
    spec = copy.deepcopy(json.loads(DEFAULT_PLAYBOOK.read_text()))
    spec["holdout"]["share"] = {"high": 1 / 3, "medium": 1 / 3}
    world = World()
    world.pipeline.scorer.playbook = Playbook.from_spec(spec, "third-held-out")
    population = generate_events(240, 365, 5, AS_OF)
    world.land("incoming/day.csv", population, tmp_path_factory.mktemp("holdout"))
    after = [(world.process("incoming/day.csv"), _items(world))]
    for day in SCHEDULE_DAYS:
        world.now = AS_OF.timestamp() + day * DAY
        after.append((world.pipeline.run_schedule(at=world.now), _items(world)))
    return world, after


def _items(world: World) -> dict[str, dict]:
    return {uid: dict(item) for uid, item in world.tables.risks.items()}


def test_no_risk_item_ever_says_holdout_unless_its_current_exposure_is_the_holdout(runs):
    _, after = runs
    for n, (_, items) in enumerate(after):
        disagree = [u for u, i in items.items() if i["holdout"] != (i.get("exposure_group") == HOLDOUT)]
        assert disagree == [], f"run {n}: {len(disagree)} items disagree"
    # the runs met the case that used to disagree: held-out users whose next message a cooldown held
    cooldown_runs = [s for s, _ in after if s.get("suppressed", {}).get("cooldown")]
    assert cooldown_runs
    held = [u for u, i in after[2][1].items() if i.get("exposure_group") == HOLDOUT]
    assert len(held) >= 20 and all(after[2][1][u]["holdout"] for u in held)
    # and users were exposed anew once cooldowns ended, so `holdout` followed their newest exposure
    assert len({(u, i["exposed_at"]) for _, items in after for u, i in items.items() if "exposed_at" in i}) > len(held)


def test_the_lift_reports_groups_are_the_holdout_draw_of_each_exposure(runs):
    # GIVEN every exposure the month made, closed (in files or archived) or current
    world, _ = runs
    playbook = world.pipeline.scorer.playbook
    assert world.bucket.archive, "the month's schedules archived the exposures they closed"
    exposures = distinct_exposures(
        [*world.bucket.every_closed(), *(exposure_from_item(i) for i in world.tables.scan_exposures())]
    )
    # THEN each is in the group the holdout draw of its user and tier puts it in
    assert exposures and all(
        e["group"] == (HOLDOUT if playbook.in_holdout(e["user_id"], e["risk_tier"]) else TREATED) for e in exposures
    )
    # AND the lift report counts exactly those exposures in each group
    overall = world.pipeline.lift_report(as_of=AS_OF.timestamp() + 90 * DAY)["rows"][0]
    for group in (TREATED, HOLDOUT):
        counted = sum(overall[group][k] for k in ("returned", "lost", "pending"))
        assert counted == sum(e["group"] == group for e in exposures) > 0
