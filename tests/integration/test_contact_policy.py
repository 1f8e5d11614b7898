"""Contact policy on moto: cooldown, opt-out list, cap per run and the holdout, enforced on the risk items."""

from __future__ import annotations

import copy
import json

from chalicelib.retention.playbook import DEFAULT_PLAYBOOK, Playbook
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.state import build_state
from churnguard_offline.generate import write_event_log
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline

T0 = AS_OF.timestamp()


def _messages(aws) -> list[dict]:
    return aws.drain_all()


def _scored(aws, pipeline, small, tmp_path) -> tuple[dict, list[dict]]:
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    summary = pipeline.process_object("incoming/a.csv", None, T0)
    return summary, _messages(aws)


def test_no_user_is_contacted_again_within_the_cooldown(aws, small, tmp_path, no_sleep):
    # GIVEN users messaged by a file's run
    pipeline = make_pipeline(aws.settings)
    _, first = _scored(aws, pipeline, small, tmp_path)
    contacted = {m["user_id"] for m in first}

    # WHEN the schedule re-scores everyone three days later
    soon = pipeline.run_schedule(T0 + 3 * SECONDS_PER_DAY)

    # THEN none of them gets a second message, and the run counts them as held by the cooldown
    again = _messages(aws)
    assert contacted and not contacted & {m["user_id"] for m in again}
    assert soon["suppressed"]["cooldown"] >= len(contacted & set(small.user_ids)) * 0.5

    # WHEN the schedule runs after the longest cooldown (14 days) has passed for both runs' messages
    later = pipeline.run_schedule(T0 + 18 * SECONDS_PER_DAY)

    # THEN contacted users still at risk are messaged again
    assert "cooldown" not in later["suppressed"]
    assert contacted & {m["user_id"] for m in _messages(aws)}


def test_users_on_the_opt_out_list_get_no_message(aws, small, tmp_path, no_sleep):
    # GIVEN an opt-out list in the bucket naming some users who would be messaged
    pipeline = make_pipeline(aws.settings)
    scored = pipeline.scorer.score(build_state(small), T0)
    would = [u for u, a in zip(scored.user_ids, scored.actions) if a is not None][:8]
    aws.s3.put_object(
        Bucket=aws.settings.behaviour_bucket,
        Key=aws.settings.opt_out_key,
        Body=("user_id\n" + "\n".join(would) + "\n").encode(),
    )

    # WHEN a file is scored
    summary, messages = _scored(aws, pipeline, small, tmp_path)

    # THEN none of them is messaged, their items carry no action, and the run counts them
    assert not set(would) & {m["user_id"] for m in messages}
    risk = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    assert all(risk[u]["action"] == "" for u in would)
    assert summary["suppressed"]["opted_out"] >= len(would)

    # AND a later run, past every cooldown, still leaves them alone
    later = pipeline.run_schedule(T0 + 30 * SECONDS_PER_DAY)
    assert not set(would) & {m["user_id"] for m in _messages(aws)}
    assert later["suppressed"]["opted_out"] >= len(would)


def test_a_run_sends_no_more_than_its_cap(aws, small, tmp_path, no_sleep):
    # GIVEN a playbook capping messages at seven a run
    capped = copy.deepcopy(json.loads(DEFAULT_PLAYBOOK.read_text()))
    capped["contact_policy"]["max_messages_per_run"] = 7
    pipeline = make_pipeline(aws.settings)
    pipeline.scorer.playbook = Playbook.from_spec(capped, "capped")

    # WHEN a file with many actionable users is scored
    summary, messages = _scored(aws, pipeline, small, tmp_path)

    # THEN seven go out and the rest are counted as held by the cap
    assert len(messages) == sum(summary["messages_sent"].values()) == 7
    assert summary["suppressed"]["run_cap"] > 0


def test_the_holdout_is_recorded_and_stays_the_same_across_runs(aws, small, tmp_path, no_sleep):
    pipeline = make_pipeline(aws.settings)
    playbook = pipeline.scorer.playbook
    summary, messages = _scored(aws, pipeline, small, tmp_path)
    pipeline.run_schedule(T0 + 30 * SECONDS_PER_DAY)

    risk = aws.items(aws.settings.risk_table)
    actionable = [i for i in risk if i["action"] and i["risk_tier"] in ("high", "medium")]
    held = {i["user_id"] for i in actionable if i["holdout"]}
    assert held == {i["user_id"] for i in actionable if playbook.in_holdout(i["user_id"], i["risk_tier"])}
    assert held and not held & {m["user_id"] for m in messages + _messages(aws)}
    assert summary["suppressed"]["holdout"] > 0


def test_a_run_during_a_promotion_says_which_entry_applied(aws, small, tmp_path, no_sleep):
    # GIVEN a playbook with a promotion around the schedule's time, and users three weeks silent
    spec = copy.deepcopy(json.loads(DEFAULT_PLAYBOOK.read_text()))
    at = T0 + 21 * SECONDS_PER_DAY
    spec["promotions"] = [
        {"name": "618", "start": "2026-06-15T00:00:00Z", "end": "2026-06-25T00:00:00Z", "risk_discount": 0.5}
    ]
    pipeline = make_pipeline(aws.settings)
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    pipeline.process_object("incoming/a.csv", None, T0)
    pipeline.scorer.playbook = Playbook.from_spec(spec, "promo")

    # WHEN the schedule re-scores everyone during it
    summary = pipeline.run_schedule(at)

    # THEN the summary names the promotion and how many users it moved, and their items say so too
    promoted = [i for i in aws.items(aws.settings.risk_table) if i.get("promotion") == "618"]
    assert summary["promotion"] == {"name": "618", "users_discounted": len(promoted)}
    assert len(promoted) > 0


def test_messages_speak_the_locale_of_the_users_latest_row_whatever_the_file_order(aws, small, tmp_path, no_sleep):
    # GIVEN users whose log says English early and Chinese later, in two files landing in either order
    pipeline = make_pipeline(aws.settings)
    path = tmp_path / "events.csv"
    write_event_log(small, path)
    body = path.read_text().splitlines()
    rows = body[1:]
    header = body[0] + ",locale\n"
    early = header + "".join(f"{r},en-GB\n" for r in rows if r.split(",")[1] <= "2026-05-01")
    late = header + "".join(f"{r},zh-CN\n" for r in rows if r.split(",")[1] > "2026-05-01")
    aws.land("incoming/late.csv", late.encode())
    pipeline.process_object("incoming/late.csv", None, T0)
    aws.land("incoming/early.csv", early.encode())
    pipeline.process_object("incoming/early.csv", None, T0)

    # THEN the stored locale is the latest row's whole tag, and the messages are rendered in its language
    states = {i["user_id"]: i for i in aws.items(aws.settings.state_table)}
    latest = {
        r.split(",")[0]: "zh-CN" if r.split(",")[1] > "2026-05-01" else "en-GB"
        for r in sorted(rows, key=lambda r: r.split(",")[1])
    }
    assert {u: s["locale"] for u, s in states.items()} == latest
    messages = _messages(aws)
    assert messages and all(m["user_locale"] == latest[m["user_id"]] for m in messages)
    briefs = [m for m in messages if m["action"]["channel"] == "account_manager"]
    assert all(m["content"]["locale"] == "en" for m in briefs)  # the staff's language, not the customer's
    assert all(m["content"]["locale"] == latest[m["user_id"]][:2] for m in messages if m not in briefs)
    assert any(m["content"]["locale"] == "zh" and "您" in m["content"]["text"] for m in messages)
