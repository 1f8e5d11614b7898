"""Tiers, reasons, the default playbook and the message schema."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.errors import InvalidMessageError
from chalicelib.retention.messages import build_message, compose, message_id, validate_message
from chalicelib.retention.playbook import load_playbook
from chalicelib.scoring.features import FEATURE_NAMES, REASON_CODES
from chalicelib.scoring.reasons import reason_effects, top_reasons, what_if
from chalicelib.scoring.tiers import fit_value_thresholds, risk_tiers, value_tiers


def test_risk_tiers_follow_the_manifest_thresholds():
    p = np.array([0.0, 0.29, 0.3, 0.59, 0.6, 1.0])
    assert list(risk_tiers(p, {"high": 0.6, "medium": 0.3})) == ["low", "low", "medium", "medium", "high", "high"]


def test_value_tiers_put_top_fifth_of_spenders_high_and_non_spenders_low():
    X = np.zeros((100, len(FEATURE_NAMES)))
    spend = np.r_[np.zeros(50), np.arange(1, 51, dtype=float)]
    X[:, FEATURE_NAMES.index("log_net_spend")] = np.log1p(spend)
    th = fit_value_thresholds(X)
    tiers = value_tiers(X, th)
    assert th["basis"] == "net_spend"
    assert set(tiers[:50]) == {"low"}
    assert (tiers[50:] == "high").sum() == 10
    assert (tiers[50:] == "medium").sum() == 15


def test_value_falls_back_to_activity_when_nobody_buys():
    X = np.zeros((100, len(FEATURE_NAMES)))
    X[:, FEATURE_NAMES.index("log_events_total")] = np.log1p(np.arange(100, dtype=float))
    th = fit_value_thresholds(X)
    assert th["basis"] == "activity"
    assert value_tiers(X, th)[-1] == "high"


@pytest.mark.parametrize(
    ("risk", "value", "reasons", "expected"),
    [
        ("high", "high", ["complaints"], ("account_manager_task", "account_manager", "priority_service_callback")),
        ("high", "high", ["price_sensitivity"], ("account_manager_task", "account_manager", "coupon_10pct")),
        ("high", "low", ["inactivity"], ("win_back", "push", "exclusive_invitation")),
        ("medium", "medium", ["price_sensitivity"], ("coupon", "email", "coupon_10pct")),
        ("medium", "low", ["feature_difficulty"], ("tutorial", "push", "guided_tutorial")),
        ("high", "medium", ["complaints"], ("service_callback", "sms", "priority_service_callback")),
        ("medium", "high", ["engagement_drop"], ("re_engage", "email", "new_content_digest")),
        ("medium", "low", [], ("win_back", "push", "exclusive_invitation")),
    ],
)
def test_default_playbook_rules(risk, value, reasons, expected):
    action = load_playbook().choose(risk, value, reasons)
    assert (action.type, action.channel, action.offer) == expected


def test_low_risk_users_get_no_action():
    assert load_playbook().choose("low", "high", ["complaints"]) is None


def test_reason_with_biggest_effect_comes_first():
    # GIVEN a model whose probability rises with complaints more than with recency
    comp = FEATURE_NAMES.index("complaints_recent")
    rec = FEATURE_NAMES.index("recency_days")

    def predict(X):
        return np.clip(0.1 + 0.2 * X[:, comp] + 0.01 * X[:, rec], 0, 1)

    X = np.zeros((2, len(FEATURE_NAMES)))
    X[0, comp], X[0, rec] = 3.0, 5.0  # complaint surge, a little silence
    X[1, comp], X[1, rec] = 0.0, 40.0  # long silence only, for a user active every five days before
    X[1, FEATURE_NAMES.index("activity_rate_long")] = 0.2
    p = predict(X)
    effects = reason_effects(X, p, np.zeros(len(FEATURE_NAMES)), what_if(X, predict))
    reasons = top_reasons(effects)
    assert reasons[0][0] == "complaints"
    assert reasons[1] == ["inactivity"]
    assert effects.shape == (2, len(REASON_CODES))


def test_top_reasons_keep_each_users_strongest_effects_of_the_minimum_or_more_in_order():
    from chalicelib.scoring.reasons import MAX_REASONS, MIN_EFFECT

    # GIVEN many users' effects: most below the minimum, some exactly at it, negative ones and no number at all
    rng = np.random.default_rng(3)
    effects = rng.choice([-0.2, 0.0, 0.005, MIN_EFFECT, 0.03, 0.08, 0.3, np.nan], size=(5000, len(REASON_CODES)))
    effects += rng.uniform(0, 1e-6, effects.shape) * (rng.random(effects.shape) < 0.5)
    # WHEN the reasons are told
    reasons = top_reasons(effects)
    # THEN each user gets, strongest first, the codes of their MAX_REASONS largest effects that reach the minimum
    assert len(reasons) == 5000
    # (among equal effects any may be told: the effects told are what is compared)
    for row, told in zip(effects, reasons):
        expected = sorted((e for e in row if e >= MIN_EFFECT), reverse=True)[:MAX_REASONS]
        assert len(set(told)) == len(told)
        assert [row[REASON_CODES.index(code)] for code in told] == expected
    # AND no two users share one list, so changing one user's reasons changes nobody else's
    assert len({id(r) for r in reasons}) == len(reasons)
    assert top_reasons(np.zeros((0, len(REASON_CODES)))) == []


def _message(**over):
    args = dict(
        user_id="u1",
        risk_tier="high",
        value_tier="low",
        churn_probability=0.8,
        reasons=["inactivity"],
        action=load_playbook().choose("high", "low", ["inactivity"]),
        model_version="m1",
        as_of="2026-06-01T00:00:00Z",
        run_id="r1",
        source="schedule",
        playbook_version="p1",
    )
    args.update(over)
    written = compose(
        load_playbook(),
        args["action"],
        user_id=args["user_id"],
        locale=None,
        risk_tier=args["risk_tier"],
        value_tier=args["value_tier"],
        segment=None,
        as_of=args["as_of"],
    )
    return build_message(**args, **written)


def test_message_validates_against_the_schema_and_id_is_stable():
    body = _message()
    validate_message(body)
    assert body["message_id"] == _message(run_id="other-run")["message_id"]
    assert body["message_id"] != _message(as_of="2026-06-02T00:00:00Z")["message_id"]
    assert body["message_id"] == message_id("u1", "2026-06-01T00:00:00Z", body["action"]["type"] + "_push")


def test_message_with_bad_probability_is_refused():
    with pytest.raises(InvalidMessageError, match=r"properties/churn_probability/maximum \('maximum' failed\)"):
        validate_message(_message(churn_probability=1.5))


def test_expected_value_thresholds_are_where_acting_pays():
    from chalicelib.scoring.tiers import expected_value_thresholds

    # acting pays when p * 200 * 0.25 >= cost: medium at 5 / 50, high at 30 / 50
    assert expected_value_thresholds(30, 5, 200, 0.25) == {"high": 0.6, "medium": 0.1}
    # costs beyond the value at risk clip to the bounds, and high stays above medium
    assert expected_value_thresholds(1000, 1000, 10, 0.1) == {"high": 0.95, "medium": 0.9}


def test_capacity_thresholds_give_the_requested_shares():
    from chalicelib.scoring.tiers import capacity_thresholds

    p = np.random.default_rng(0).random(10_000)
    th = capacity_thresholds(p, 0.05, 0.15)
    tiers = risk_tiers(p, th)
    assert abs((tiers == "high").mean() - 0.05) < 0.002
    assert abs((tiers == "medium").mean() - 0.15) < 0.002


def test_a_playbook_answers_each_user_as_a_fresh_one_would_whatever_it_was_asked_before():
    import itertools
    import random

    from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook

    # GIVEN every risk tier, value tier and reason list of up to two codes (the playbook's, and one it lacks)
    codes = [*load_playbook().reasons, "not_a_reason"]
    lists = [[], *([c] for c in codes), *(list(p) for p in itertools.permutations(codes, 2))]
    asks = [(r, v, reasons) for r in ("high", "medium", "low") for v in ("high", "medium", "low") for reasons in lists]
    random.Random(4).shuffle(asks)
    # WHEN one playbook answers them all, twice over, as a run asks for each user in turn
    playbook = Playbook.load(DEFAULT_PLAYBOOK)
    answers = [playbook.choose(*ask) for ask in asks + asks]
    # THEN each answer is what a playbook of the same file that was never asked anything gives
    for ask, answer in zip(asks + asks, answers, strict=True):
        assert answer == Playbook(playbook.spec, playbook.source).choose(*ask), ask
