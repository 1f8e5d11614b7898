"""Promotion-aware tiers: during a promotion, inactivity-driven risk is discounted as the playbook says."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook, PlaybookError
from chalicelib.scoring.artifact import load_model
from chalicelib.scoring.scorer import Scorer, iso_time
from chalicelib.scoring.state import build_state
from chalicelib.scoring.tiers import risk_tiers
from churnguard_offline.generate import generate_events
from tests.conftest import ROOT

END = datetime(2026, 6, 1, tzinfo=UTC)
DAY = 86400.0


def promo_playbook(start: float, end: float, discount: float = 0.5) -> Playbook:
    spec = copy.deepcopy(json.loads(DEFAULT_PLAYBOOK.read_text()))
    spec["promotions"] = [
        {"name": "summer-sale", "start": iso_time(start), "end": iso_time(end), "risk_discount": discount}
    ]
    return Playbook.from_spec(spec, "promo")


@pytest.fixture(scope="module")
def scored_state():
    model = load_model(ROOT / "model_artifacts")
    return model, build_state(generate_events(600, 365, 5, END))


def test_during_a_promotion_inactivity_driven_risk_is_discounted_before_tiering(scored_state):
    model, state = scored_state
    t = END.timestamp() + 20 * DAY  # three weeks of silence: inactivity leads many users' reasons
    plain = Scorer(model).score(state, t)
    promo = Scorer(model, promo_playbook(t - DAY, t + DAY)).score(state, t)

    top = np.array([r[0] if r else "" for r in plain.reasons])
    hit = (top == "inactivity") & (plain.risk_tier != "low")
    expected = plain.risk_tier.copy()
    expected[hit] = risk_tiers(plain.probability[hit] * 0.5, model.risk_thresholds)

    assert promo.promotion == "summer-sale"
    np.testing.assert_array_equal(promo.risk_tier, expected)
    np.testing.assert_array_equal(promo.discounted, hit)
    np.testing.assert_array_equal(promo.probability, plain.probability)  # the model's estimate is kept
    assert (expected != plain.risk_tier).sum() > 10


def test_outside_the_promotion_nothing_changes(scored_state):
    model, state = scored_state
    t = END.timestamp() + 20 * DAY
    promo = Scorer(model, promo_playbook(t + DAY, t + 2 * DAY)).score(state, t)
    plain = Scorer(model).score(state, t)
    assert promo.promotion is None
    np.testing.assert_array_equal(promo.risk_tier, plain.risk_tier)


def test_a_promotion_that_ends_before_it_starts_is_refused():
    with pytest.raises(PlaybookError, match=r"promotions/0: end .* is not after start"):
        promo_playbook(END.timestamp(), END.timestamp() - DAY)
