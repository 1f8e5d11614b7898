"""The message contract since 1.0: expiry, labels in the message's language, the user's whole locale tag, briefs in the
staff's language, `content` required, any 1.x version, and bodies a consumer of 1.0 still validates."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from chalicelib.errors import InvalidMessageError
from chalicelib.retention.messages import build_message, compose, expiry, validate_message
from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook, load_playbook
from chalicelib.scoring.events import locale_code

DEFAULT = json.loads(DEFAULT_PLAYBOOK.read_text())
AS_OF = "2026-06-01T09:30:00Z"
# The message schema as it was at 1.0, before expires_at, the labels and user_locale: what consumers hold today.
SCHEMA_1_0 = json.loads((Path(__file__).parent / "retention-message-1.0.schema.json").read_text())


def message(playbook: Playbook | None = None, locale: str | None = None, **over) -> dict:
    """Return a message body as a run builds it, for a user of the given locale tag."""
    playbook = playbook or load_playbook()
    who = {"user_id": "u1", "risk_tier": "medium", "value_tier": "low", "reasons": ["price_sensitivity"], **over}
    action = playbook.choose(who["risk_tier"], who["value_tier"], who["reasons"])
    written = compose(
        playbook,
        action,
        user_id=who["user_id"],
        locale=locale,
        risk_tier=who["risk_tier"],
        value_tier=who["value_tier"],
        segment="loyal",
        as_of=AS_OF,
    )
    return build_message(
        **who,
        churn_probability=0.4,
        action=action,
        model_version="m1",
        as_of=AS_OF,
        run_id="r1",
        source="schedule",
        playbook_version=playbook.version,
        segment={"rfm": "loyal", "activity": "low"},
        **written,
    )


@pytest.mark.parametrize(("tier", "expires"), [("high", "2026-06-08T09:30:00Z"), ("medium", "2026-06-15T09:30:00Z")])
def test_a_message_expires_when_the_tiers_cooldown_ends(tier, expires):
    body = message(risk_tier=tier)
    validate_message(body)
    assert body["expires_at"] == expires
    assert expiry("2026-12-31T23:59:59Z", 86400) == "2027-01-01T23:59:59Z"


def test_a_message_labels_its_reason_and_offer_in_its_own_language():
    english, chinese = message(locale="en-GB"), message(locale="zh-Hant-TW")
    assert (english["action"]["reason"], english["reason_label"], english["offer_label"]) == (
        "price_sensitivity",
        "price sensitivity",
        "10% off your next order",
    )
    assert (chinese["content"]["locale"], chinese["reason_label"], chinese["offer_label"]) == (
        "zh",
        "价格敏感",
        "下单立减10%",
    )
    assert chinese["offer_label"] in chinese["content"]["text"]


@pytest.mark.parametrize(
    ("locale", "language"),
    [("pt-BR", "en"), ("zh-CN", "zh"), ("zh-Hans", "zh"), ("en-US", "en"), ("fr", "en"), (None, "en")],
)
def test_the_users_whole_locale_tag_stands_beside_the_language_the_text_is_in(locale, language):
    body = message(locale=locale)
    validate_message(body)
    assert body["content"]["locale"] == language
    assert body.get("user_locale") == locale  # absent when the user's events named no locale


def test_an_account_manager_brief_is_written_in_the_staffs_language_not_the_customers():
    # GIVEN a Chinese-speaking customer at high risk and of high value, and a playbook whose staff read English
    body = message(locale="zh-CN", risk_tier="high", value_tier="high")
    # THEN the brief, and its labels, are English; the customer's locale is still told
    assert body["action"]["channel"] == "account_manager"
    assert body["content"]["locale"] == "en" and body["content"]["text"].startswith("Account manager brief: u1 is")
    assert (body["reason_label"], body["user_locale"]) == ("price sensitivity", "zh-CN")
    # AND a team reading Chinese gets the brief of an English-speaking customer in Chinese
    spec = copy.deepcopy(DEFAULT)
    spec["staff_locale"] = "zh"
    brief = message(Playbook.from_spec(spec, "zh-staff"), locale="en-US", risk_tier="high", value_tier="high")
    assert brief["content"]["text"].startswith("客户经理简报：用户u1是忠实客户")
    # AND customers' own messages stay in their language
    assert message(Playbook.from_spec(spec, "zh-staff"), locale="en-US")["content"]["locale"] == "en"


def test_the_staff_locale_defaults_to_the_playbooks_default_locale():
    spec = copy.deepcopy(DEFAULT)
    del spec["staff_locale"]
    assert Playbook.from_spec(spec, "p").staff_locale == "en"
    spec["default_locale"] = "zh"
    assert Playbook.from_spec(spec, "p").staff_locale == "zh"


@pytest.mark.parametrize(
    ("version", "valid"), [("1.0", True), ("1.1", True), ("1.12", True), ("2.0", False), ("1", False), ("1.x", False)]
)
def test_any_1_x_schema_version_is_accepted_and_no_other(version, valid):
    body = {**message(), "schema_version": version}
    if valid:
        validate_message(body)
    else:
        with pytest.raises(InvalidMessageError, match="schema_version"):
            validate_message(body)


@pytest.mark.parametrize("field", ["content", "expires_at", "reason_label"])
def test_a_message_without_content_or_with_a_broken_new_field_is_refused(field):
    body = message()
    if field == "content":
        del body["content"]
    else:
        body[field] = ""
    with pytest.raises(InvalidMessageError):
        validate_message(body)


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        ("en_us", "en-US"),
        ("ZH-hans-cn", "zh-Hans-CN"),
        ("pt_BR.UTF-8", "pt-BR"),
        ("sr_RS@latin", "sr-RS"),
        ("es-419", "es-419"),
        (" fr ", "fr"),
        ("<script>alert(1)</script>", None),
        ("en-US; DROP TABLE", None),
        ("C", None),
        ("en-" + "a" * 40, None),
        ("", None),
    ],
)
def test_a_locale_is_kept_as_its_bcp_47_tag_and_anything_else_is_ignored(raw, tag):
    assert locale_code(raw) == tag


def test_a_consumer_validating_with_the_1_0_schema_it_holds_accepts_todays_bodies():
    # GIVEN a consumer written for today's bodies: it validates each with the 1.0 schema it holds (whose
    # schema_version is `const: "1.0"`), as docs/scores-and-messages.md says it "accepts" new bodies
    consumer = Draft202012Validator(SCHEMA_1_0, format_checker=Draft202012Validator.FORMAT_CHECKER)
    # WHEN the run sends a body THEN it validates (issue 14: "a consumer written for today's bodies still
    # validates them"); a body carrying "1.1" fails every strict 1.0 consumer on its version alone
    body = message(locale="pt-BR", risk_tier="high", value_tier="high", reasons=["inactivity"])
    assert [list(e.absolute_path) for e in consumer.iter_errors(body)] == []
