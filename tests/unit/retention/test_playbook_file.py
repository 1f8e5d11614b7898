"""The playbook file: checked when loaded, with errors naming the file and the place; the holdout draw."""

from __future__ import annotations

import copy
import json

import pytest

from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook, PlaybookError, load_playbook

DEFAULT = json.loads(DEFAULT_PLAYBOOK.read_text())


def _load(tmp_path, spec) -> Playbook:
    path = tmp_path / "playbook.json"
    path.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return Playbook.load(path)


def test_the_default_playbook_is_valid_and_versioned():
    playbook = load_playbook()
    assert playbook.version == DEFAULT["playbook_version"]
    assert playbook.contact_policy.cooldown_seconds("high") == 7 * 86400
    assert playbook.choose("high", "high", ["complaints"]).template == "account_manager_brief"
    assert playbook.choose("medium", "low", ["price_sensitivity"]).template == "coupon"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: s.pop("rules"), "(top level): 'rules' is a required property"),
        (lambda s: s["rules"][1]["then"].update(channel="fax"), "rules/1/then/channel: 'fax' is not one of"),
        (lambda s: s["holdout"]["share"].update(high=-0.1), "holdout/share/high: -0.1 is less than the minimum"),
        (lambda s: s.update(default_reason="boredom"), "default_reason: 'boredom' is not one of reasons"),
        (lambda s: s["rules"].pop(), "rules: the last rule must match everyone"),
        (lambda s: s.update(colour="blue"), "Additional properties are not allowed ('colour' was unexpected)"),
        (lambda s: s["texts"]["templates"].pop("coupon"), "texts/templates: no text for coupon"),
        (
            lambda s: s["texts"]["templates"]["coupon"].update(zh="{name}，您好"),
            "texts/templates/coupon/zh: unknown placeholder {name}; use {user_id}, {segment}, {offer}",
        ),
    ],
)
def test_a_broken_playbook_is_refused_naming_the_file_and_place(tmp_path, change, says):
    spec = copy.deepcopy(DEFAULT)
    change(spec)
    with pytest.raises(PlaybookError) as refused:
        _load(tmp_path, spec)
    assert str(refused.value).startswith(str(tmp_path / "playbook.json"))
    assert says in str(refused.value)


def test_a_playbook_that_is_not_json_is_refused(tmp_path):
    with pytest.raises(PlaybookError, match=r"playbook\.json: not a JSON playbook"):
        _load(tmp_path, "{rules: [")


def test_rules_are_tried_in_order_and_fields_default_to_the_reason(tmp_path):
    spec = copy.deepcopy(DEFAULT)
    spec["rules"].insert(
        0, {"when": {"reason": ["price_sensitivity"]}, "then": {"channel": "sms", "offer": "coupon_20pct"}}
    )
    spec["texts"]["offers"]["coupon_20pct"] = {"en": "20% off", "zh": "立减20%"}
    playbook = _load(tmp_path, spec)
    action = playbook.choose("medium", "high", ["price_sensitivity", "inactivity"])
    assert (action.code, action.type, action.channel, action.offer, action.template) == (
        "coupon_sms",
        "coupon",
        "sms",
        "coupon_20pct",
        "coupon",
    )
    # a reason the playbook does not list falls through to the next listed one, then to the default
    assert playbook.choose("medium", "high", ["unsubscribed", "spend_drop"]).type == "rebate"
    assert playbook.choose("medium", "high", ["unsubscribed"]).type == "win_back"


def test_the_holdout_is_the_configured_share_of_each_tier_and_stable():
    playbook = load_playbook()
    users = [f"user-{i}" for i in range(40_000)]
    held = [u for u in users if playbook.in_holdout(u, "high")]
    assert abs(len(held) / len(users) - 0.10) < 0.005
    assert held == [u for u in users if playbook.in_holdout(u, "high")]
    assert not any(playbook.in_holdout(u, "low") for u in users[:1000])  # no share set for low


def test_a_new_salt_draws_a_new_holdout_group(tmp_path):
    spec = copy.deepcopy(DEFAULT)
    spec["holdout"]["salt"] = "another"
    other = _load(tmp_path, spec)
    users = [f"user-{i}" for i in range(20_000)]
    first = {u for u in users if load_playbook().in_holdout(u, "medium")}
    second = {u for u in users if other.in_holdout(u, "medium")}
    assert abs(len(first & second) / len(first) - 0.10) < 0.03  # independent draws overlap by the share


@pytest.mark.parametrize(
    ("locale", "text"),
    [
        (
            "en",
            "We miss you! You used to be one of our most active members, so here is something just for you: "
            "an invitation to a members-only event.",
        ),
        ("zh", "好久不见，我们很想念您！您曾是我们最活跃的会员之一，特别为您准备了：会员专属活动邀请。"),
    ],
)
def test_message_texts_are_rendered_in_english_and_chinese(locale, text):
    playbook = load_playbook()
    action = playbook.choose("high", "low", ["inactivity"])
    assert playbook.render(action, locale, "u1", "high", "low") == text


def test_the_account_manager_brief_names_the_user_and_the_reason():
    playbook = load_playbook()
    action = playbook.choose("high", "high", ["complaints"])
    assert playbook.render(action, "zh", "u42", "high", "high", "cant_lose") == (
        "客户经理简报：用户u42是不能失去的客户（高价值），流失风险高，主要原因：投诉。建议：优先回电服务。"
    )
    assert "u42 is a customer we cannot lose (high value)" in playbook.render(
        action, "en", "u42", "high", "high", "cant_lose"
    )
