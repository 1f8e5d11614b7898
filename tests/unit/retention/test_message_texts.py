"""Messages fit to send: every template of the default playbook reads as correct sentences with every offer,
reason, segment and tier in every language, and a playbook whose template cannot compose is refused."""

from __future__ import annotations

import copy
import itertools
import json

import pytest

from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, LANGUAGES, Action, Playbook, PlaybookError, load_playbook
from chalicelib.retention.sentences import problems

DEFAULT = json.loads(DEFAULT_PLAYBOOK.read_text())
TIERS = ("high", "medium", "low")


def _renders(playbook: Playbook):
    """Yield (where, text) for each template x offer x reason x language, and x segment x tiers where used."""
    texts = playbook.texts
    segments = [*texts["segments"], None, "a_code_with_no_label"]
    for template, by_language in texts["templates"].items():
        for language, offer, reason in itertools.product(LANGUAGES, texts["offers"], texts["reasons"]):
            action = Action("code", "type", "email", offer, 1, template, reason)
            says = by_language[language]
            people = itertools.product(
                segments if "{segment}" in says else [None],
                TIERS if "{risk_tier}" in says else ["high"],
                TIERS if "{value_tier}" in says else ["high"],
            )
            for segment, risk, value in people:
                text = playbook.render(action, language, "u1", risk, value, segment)
                yield f"{template}/{language} + {offer} + {reason} + {segment} {risk}/{value}", text


def test_every_template_reads_as_correct_sentences_with_every_offer_reason_and_language():
    # GIVEN the default playbook
    playbook = load_playbook()
    # WHEN each template is rendered with each offer and reason in each language (and each segment and tier pair
    # for the templates that name them)
    rendered = list(_renders(playbook))
    # THEN every text reads as correct sentences: no lower-case sentence start, doubled word or phrase,
    # placeholder left, double space or doubled punctuation
    assert len(rendered) > 2 * 8 * 7 * 7
    broken = [(where, text, found) for where, text in rendered if (found := problems(text))]
    assert broken == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        # what customers read before (issue 14)
        ("A lot has happened since your last visit. a digest of what is new is waiting for you.", "lower-case"),
        ("A little something for your next order: 10% off your next order.", "phrase said twice: 'next order'"),
        ("Welcome {name}, here is an offer.", "placeholder is left"),
        ("We miss you!  Here is an offer.", "double space"),
        ("Here is an offer: 10% off..", "doubled punctuation"),
        ("Here is an offer: 10% off your next order.", []),
        ("Here is is an offer.", "doubled word: 'is'"),
        ("Here is an offer , just for you.", "space before punctuation"),
        ("Here is an offer", "no full stop"),
        (" Here is an offer.", "space at the start or end"),
        ("", "empty"),
        ("客户经理简报：用户u1是有流失风险的客户（高价值），流失风险高。", "phrase said twice: '流失风'"),
        ("送您一份小心意：下单立减10%。。", "doubled punctuation"),
        ("We miss you! You used to be one of our most active members: an invitation.", []),
        ("好久不见，我们很想念您！您曾是我们最活跃的会员之一，特别为您准备了：会员专属活动邀请。", []),
        ("10% off is waiting for you. Été comme hiver, à bientôt.", []),
        ("Bis bald. über alles.", "lower-case"),
    ],
)
def test_the_sentence_checks_find_what_a_customer_would_notice(text, says):
    found = problems(text)
    if says == []:
        assert found == []
    else:
        assert any(says in f for f in found), found


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            lambda t: t["templates"]["re_engage_new_content"].update(
                en="A lot has happened since your last visit. {offer} is waiting for you."  # the template of 1.0
            ),
            "texts/templates/re_engage_new_content/en: with offer exclusive_invitation, a sentence starts lower-case",
        ),
        (
            lambda t: t["templates"]["coupon"].update(en="A little something for your next order: {offer}."),
            "texts/templates/coupon/en: with offer coupon_10pct, a phrase said twice: 'next order'",
        ),
        (
            lambda t: t["offers"]["guided_tutorial"].update(zh="教程。"),
            "/zh: with offer guided_tutorial, doubled punctuation",
        ),
        (
            lambda t: t["reasons"]["complaints"].update(en="Complaints."),
            "texts/templates/account_manager_brief/en: with segment loyal, value_tier high, risk_tier high, "
            "reason complaints, offer priority_service_callback, doubled punctuation",
        ),
    ],
    ids=["offer_starts_a_sentence", "offer_repeats_the_template", "offer_with_a_full_stop", "reason_with_one"],
)
def test_a_playbook_whose_template_cannot_compose_is_refused_naming_the_filling(change, says):
    # GIVEN the default playbook with one text that reads badly beside some offer or reason
    spec = copy.deepcopy(DEFAULT)
    change(spec["texts"])
    # WHEN it is loaded THEN it is refused, naming the template, the language, the pair and the problem
    with pytest.raises(PlaybookError) as refused:
        Playbook.from_spec(spec, "playbook.json")
    assert str(refused.value).startswith("playbook.json: ")
    assert says in str(refused.value)


def test_a_user_without_a_segment_reads_as_a_customer_in_the_brief():
    playbook = load_playbook()
    action = playbook.choose("high", "high", ["complaints"])
    text = playbook.render(action, "en", "u7", "high", "high", None)
    assert "u7 is a customer of no known segment (high value) at high risk" in text
    assert problems(text) == []


def test_the_checks_stay_linear_on_a_huge_or_hostile_text():
    # a label as long as a playbook author could paste, in both scripts, with markup and braces
    texts = ["好" * 100_000 + "。", "<b>Hi</b> " * 20_000 + "{offer}.", "ab. " * 25_000]
    found = [problems(t) for t in texts]
    assert "a phrase said twice: '好好好'" in found[0]
    assert "a placeholder is left" in found[1] and any("lower-case" in f for f in found[2])
