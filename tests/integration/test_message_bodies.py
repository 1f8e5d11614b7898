"""A demo-like run through the real handlers on moto: every queued body carries the 1.1 fields and reads as
correct sentences, in the language its user's locale tag (or the staff's, for briefs) calls for."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from jsonschema import Draft202012Validator

from chalicelib.retention.messages import validate_message
from chalicelib.retention.outcomes import HOLDOUT
from chalicelib.retention.playbook import load_playbook
from chalicelib.retention.sentences import problems
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.scorer import iso_time
from churnguard_offline.lambda_events import scheduled
from tests.integration.conftest import AS_OF, csv_bytes

SCHEMA_1_0 = Path(__file__).resolve().parents[1] / "unit" / "retention" / "retention-message-1.0.schema.json"
# Each user's locale column, by the last digit of their id: a tag the playbook speaks, one it does not, none.
TAGS = {"0": "pt_BR", "1": "zh-CN", "2": "zh-Hant-TW", "3": "en-GB", "4": "", "5": "fr", "6": "ZH_cn.UTF-8"}
WRITTEN = {"pt_BR": "pt-BR", "zh-CN": "zh-CN", "zh-Hant-TW": "zh-Hant-TW", "en-GB": "en-GB", "fr": "fr"}
WRITTEN["ZH_cn.UTF-8"] = "zh-CN"


def _with_locales(data: bytes) -> bytes:
    """Return an event log with a locale column, each user's tag by the last digit of their id."""
    header, *rows = data.decode().splitlines()
    return "\n".join([f"{header},locale", *(f"{r},{TAGS.get(r.split(',')[0][-1], '')}" for r in rows)]).encode()


def test_a_demo_like_runs_messages_carry_the_new_fields_and_read_as_correct_sentences(
    aws, client, population, tmp_path
):
    # GIVEN a year of behaviour with each user's locale tag, landing and scored, then the schedule a week later
    event = aws.land("incoming/backfill/history.csv", _with_locales(csv_bytes(population, tmp_path)))
    [first] = client.lambda_.invoke("on_behaviour_file", event).payload
    later = client.lambda_.invoke("scheduled_scoring", scheduled(AS_OF.timestamp() + 8 * SECONDS_PER_DAY)).payload
    assert first["status"] == later["status"] == "succeeded"

    # WHEN every queue is read
    bodies = aws.drain_all()
    assert len(bodies) == first["messages_claimed"] + later["messages_claimed"] > 50
    playbook = load_playbook()
    consumer_1_0 = Draft202012Validator(json.loads(SCHEMA_1_0.read_text()))

    # THEN each body is valid against the schema, and against the 1.0 schema today's consumers hold
    for body in bodies:
        validate_message(body)
        assert body["schema_version"] == "1.0"
        assert [list(e.absolute_path) for e in consumer_1_0.iter_errors(body)] == []
        _assert_reads_right(playbook, body)
    # AND the run spoke every language and wrote account-manager briefs in the staff's
    languages = Counter((b["action"]["channel"] == "account_manager", b["content"]["locale"]) for b in bodies)
    assert languages[(False, "en")] and languages[(False, "zh")] and languages[(True, "en")]
    assert not languages[(True, "zh")]
    assert {b.get("user_locale") for b in bodies} >= {"pt-BR", "zh-Hant-TW", "zh-CN", None}

    # AND no risk item's holdout disagrees with its exposure
    risk = aws.items(aws.settings.risk_table)
    assert all(i["holdout"] == (i.get("exposure_group") == HOLDOUT) for i in risk)
    assert any(i["holdout"] for i in risk)


def _assert_reads_right(playbook, body: dict) -> None:
    """Assert one body's text reads as correct sentences in the right language, with its labels and expiry."""
    text, language = body["content"]["text"], body["content"]["locale"]
    assert problems(text) == [], text
    tag = WRITTEN.get(TAGS.get(body["user_id"][-1], ""))
    assert body.get("user_locale") == tag
    brief = body["action"]["channel"] == "account_manager"
    speaks = "zh" if tag and tag.startswith("zh") else "en"
    assert language == ("en" if brief else speaks)
    assert body["offer_label"] == playbook.texts["offers"][body["action"]["offer"]][language]
    assert body["offer_label"] in text
    assert body["reason_label"] == playbook.texts["reasons"][body["action"]["reason"]][language]
    if brief:
        assert body["reason_label"] in text and body["user_id"] in text
    days = {"high": 7, "medium": 14}[body["risk_tier"]]
    as_of = AS_OF.timestamp() + (8 * SECONDS_PER_DAY if body["source"] == "schedule" else 0)
    assert body["as_of"] == iso_time(as_of)
    assert body["expires_at"] == iso_time(as_of + days * SECONDS_PER_DAY)
