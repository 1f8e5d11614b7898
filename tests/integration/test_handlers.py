"""The S3 trigger and the schedule, through chalice.test.Client on moto: what lands in DynamoDB and SQS."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np

from chalicelib import runtime
from chalicelib.retention.messages import validate_message
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.features import compute_features
from chalicelib.scoring.scorer import SCORE_COLUMNS
from chalicelib.scoring.segments import SEGMENTS
from chalicelib.scoring.state import StateBatch, build_state
from chalicelib.settings import Settings
from churnguard_offline.bootstrap import ensure_resources
from churnguard_offline.lambda_events import scheduled
from tests.integration.conftest import AS_OF, csv_bytes, gz_truncated

EVENTS_DIR = Path(__file__).resolve().parent.parent / "events"


def _invoke(client, name, event):
    return client.lambda_.invoke(name, event).payload


def _stored_state(aws) -> StateBatch:
    items = aws.items(aws.settings.state_table)
    return StateBatch.from_blobs([i["user_id"] for i in items], [bytes(i["state"].value) for i in items])


def _assert_risk_item(item: dict, as_of: str) -> None:
    """Assert a risk item carries the contract's attributes, in range, scored as of `as_of`."""
    assert set(SCORE_COLUMNS) | {"run_id", "scored_at", "source"} <= set(item)
    assert 0 <= float(item["churn_probability"]) <= 1
    assert item["risk_tier"] in ("high", "medium", "low")
    assert item["as_of"] == as_of
    assert item["rfm_segment"] in SEGMENTS and item["activity_cluster"] in ("high", "medium", "low")


def _assert_tier_message(message: dict, tier: str, stored: dict) -> None:
    """Assert a message from `tier`'s queue is valid and agrees with its user's stored risk item."""
    body, attributes = message["body"], message["attributes"]
    validate_message(body)
    assert body["risk_tier"] == tier == stored["risk_tier"]
    assert attributes["channel"] == body["action"]["channel"]
    assert attributes["value_tier"] == body["value_tier"]
    assert body["segment"] == {"rfm": stored["rfm_segment"], "activity": stored["activity_cluster"]}
    assert body["content"]["locale"] == "en" and body["content"]["text"]


def _assert_messages_spare_only_the_holdout(summary: dict, risk: dict[str, dict]) -> None:
    """Assert every actionable high/medium user got a message unless held out, and the holdout was counted."""
    actionable = [i for i in risk.values() if i["risk_tier"] != "low" and i["action"]]
    held_out = [i for i in actionable if i["holdout"]]
    assert sum(summary["messages_sent"].values()) == len(actionable) - len(held_out) > 0
    assert summary["suppressed"]["holdout"] == len(held_out) > 0


def test_upload_scores_every_user_into_dynamodb_and_sends_valid_messages(aws, client, population, tmp_path):
    # GIVEN a year of behaviour landing as one gzip file
    event = aws.land("incoming/backfill/history.csv.gz", csv_bytes(population, tmp_path, gz=True))

    # WHEN the S3 trigger runs
    [summary] = _invoke(client, "on_behaviour_file", event)

    # THEN every user has a risk item with the contract's attributes
    risk = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    assert summary["status"] == "succeeded"
    assert len(risk) == len(population.user_ids) == summary["users_scored"]
    for item in risk.values():
        _assert_risk_item(item, "2026-06-01T00:00:00Z")
    assert len(aws.items(aws.settings.state_table)) == len(population.user_ids)

    # AND one valid message per actionable high/medium user, in the queue of their tier
    for tier in ("high", "medium"):
        messages = aws.drain(tier)
        assert len(messages) == summary["messages_sent"][tier]
        for m in messages:
            _assert_tier_message(m, tier, risk[m["body"]["user_id"]])
    # AND the holdout got no message but is recorded, and counted
    _assert_messages_spare_only_the_holdout(summary, risk)

    # AND the run summary is in the bucket, with rows that add up
    stored = json.loads(aws.get(f"runs/{summary['run_id']}.json"))
    assert stored["rows"]["read"] == stored["rows"]["scored"] + stored["rows"]["rejected"] == len(population)


def test_replayed_upload_enqueues_no_duplicate_messages(aws, client, population, tmp_path):
    event = aws.land("incoming/a.csv", csv_bytes(population, tmp_path))
    [first] = _invoke(client, "on_behaviour_file", event)
    state_before = _stored_state(aws)

    [again] = _invoke(client, "on_behaviour_file", event)

    assert again["status"] == "duplicate"
    assert again["run_id"] == first["run_id"]
    assert len(aws.drain_all()) == sum(first["messages_sent"].values())
    np.testing.assert_array_equal(_stored_state(aws).subset(state_before.user_ids).values, state_before.values)


def test_sample_event_file_with_encoded_key_is_decoded(aws, client, population, tmp_path):
    # GIVEN the sample S3 event of a key with a space, as S3 URL-encodes it
    event = json.loads((EVENTS_DIR / "s3_object_created.json").read_text())
    key = "incoming/daily export 2026-06-01.csv"
    landed = aws.land(key, csv_bytes(population, tmp_path))
    event["Records"][0]["s3"]["object"]["versionId"] = landed["Records"][0]["s3"]["object"]["versionId"]
    event["Records"][0]["s3"]["bucket"]["name"] = aws.settings.behaviour_bucket
    [summary] = _invoke(client, "on_behaviour_file", event)
    assert summary["status"] == "succeeded"
    assert summary["object"]["key"] == key


def test_bad_rows_are_rejected_with_reasons_and_the_rest_is_scored(aws, client, population, tmp_path):
    bad = ",2026-05-01T00:00:00Z,login,\nu-x,not-a-date,login,\nu-y,2026-05-01T00:00:00Z,purchase,abc\n"
    event = aws.land("incoming/with-bad.csv", csv_bytes(population, tmp_path, extra=bad))

    [summary] = _invoke(client, "on_behaviour_file", event)

    assert summary["rows"]["rejected"] == 3
    assert summary["rows"]["read"] == len(population) + 3
    rows = list(csv.DictReader(io.StringIO(aws.get("rejected/incoming/with-bad.csv.csv").decode())))
    assert sorted(r["reason"] for r in rows) == ["bad_event_time", "bad_value", "missing_user_id"]
    assert all(int(r["line"]) > len(population) for r in rows)
    assert len(aws.items(aws.settings.risk_table)) == len(population.user_ids)


def test_unreadable_file_is_moved_aside_and_never_retried(aws, client, population, tmp_path):
    event = aws.land("incoming/broken.csv.gz", gz_truncated(csv_bytes(population, tmp_path)))

    [summary] = _invoke(client, "on_behaviour_file", event)
    [again] = _invoke(client, "on_behaviour_file", event)

    assert summary["status"] == "unreadable"
    assert "gzip" in summary["reason"].lower()
    assert aws.keys("quarantine/") == [
        "quarantine/incoming/broken.csv.gz",
        "quarantine/incoming/broken.csv.gz.reason.json",
    ]
    assert aws.keys("incoming/") == []
    assert again["status"] == "duplicate"
    assert aws.items(aws.settings.risk_table) == []


def test_schedule_raises_the_risk_of_users_who_went_silent(aws, client, population, tmp_path):
    # GIVEN users scored when their file landed
    _invoke(client, "on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(population, tmp_path)))
    before = {i["user_id"]: float(i["churn_probability"]) for i in aws.items(aws.settings.risk_table)}
    aws.drain_all()

    # WHEN the schedule runs 45 days later and no file arrived meanwhile
    later = AS_OF.timestamp() + 45 * SECONDS_PER_DAY
    summary = _invoke(client, "scheduled_scoring", scheduled(later))

    # THEN every user is re-scored as of the schedule's time, and risk went up
    after = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    assert summary["users_scored"] == len(before)
    # (each item written as of the schedule, or left as it was when nothing a consumer reads changed)
    written = sum(i["as_of"] == "2026-07-16T00:00:00Z" for i in after.values())
    assert written + summary["risk_writes_skipped"] == len(before)
    rise = np.array([float(after[u]["churn_probability"]) - p for u, p in before.items()])
    assert np.mean(rise > 0) > 0.8
    assert summary["risk_tier"].get("high", 0) > sum(1 for p in before.values() if p >= 0.6)
    assert len(aws.drain("high")) == summary["messages_sent"]["high"]
    # AND the state was not touched by a scoring-only run
    assert {i["state_run_id"] for i in aws.items(aws.settings.state_table)} != {summary["run_id"]}


def test_schedule_processes_a_file_whose_trigger_never_came(aws, client, population, tmp_path):
    # GIVEN a file that landed without its S3 event (moto stamps it with the real time)
    aws.land("incoming/missed.csv", csv_bytes(population, tmp_path))
    fired = time.time() + 60

    # WHEN the schedule fires after it, and once more an hour later
    summary = _invoke(client, "scheduled_scoring", scheduled(fired))
    again = _invoke(client, "scheduled_scoring", scheduled(fired + 3600))

    # THEN the first sweeps the file and both re-score everyone it brought in
    assert [f["status"] for f in summary["swept_files"]] == ["succeeded"]
    assert summary["users_scored"] == len(population.user_ids)
    assert again["swept_files"] == []
    assert again["users_scored"] == len(population.user_ids)


def test_split_and_shuffled_files_give_the_same_state_as_one_file(aws, client, population, tmp_path):
    # GIVEN the population's events split into 6 delta files, landed in shuffled order
    rng = np.random.default_rng(9)
    part = rng.integers(0, 6, len(population))
    for i in rng.permutation(6):
        data = csv_bytes(population.select(part == i), tmp_path)
        _invoke(client, "on_behaviour_file", aws.land(f"incoming/part-{i}.csv", data))

    # THEN the stored state gives the same features as the offline build of one file
    expected = build_state(population)
    stored = _stored_state(aws).subset(expected.user_ids)
    t = AS_OF.timestamp() + 10 * SECONDS_PER_DAY
    np.testing.assert_allclose(
        compute_features(stored.values, t), compute_features(expected.values, t), rtol=1e-9, atol=1e-9
    )


def test_snapshot_replaces_its_users_state(aws, client, population, tmp_path):
    _invoke(client, "on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(population, tmp_path)))
    user = population.user_ids[0]
    snapshot = f"user_id,event_time,event_type,value\n{user},2026-05-30T10:00:00Z,purchase,10\n"

    [summary] = _invoke(client, "on_behaviour_file", aws.land("incoming/snapshots/s1.csv", snapshot.encode()))

    item = next(i for i in aws.items(aws.settings.state_table) if i["user_id"] == user)
    assert summary["mode"] == "snapshot"
    assert item["events"] == 1
    assert item["first_seen"] == "2026-05-30T10:00:00Z"


def test_shared_table_keeps_state_and_risk_on_one_item(monkeypatch, stage_env, population, tmp_path):
    # GIVEN STATE_TABLE naming the same table as RISK_TABLE
    from chalicelib.settings import Settings
    from churnguard_offline.bootstrap import ensure_resources
    from tests.integration.conftest import Aws, strict_moto

    monkeypatch.setenv("STATE_TABLE", stage_env["RISK_TABLE"])
    with strict_moto():
        runtime.clear()
        ensure_resources()
        aws = Aws(Settings.from_env())
        pipeline = runtime.get_pipeline()
        # (a hundred users: moto is slow at the UpdateItem calls a shared item needs)
        few = population.select(population.user_index < 100)
        aws.land("incoming/a.csv", csv_bytes(few, tmp_path))

        # WHEN a file is scored and then the schedule re-scores everyone
        pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())
        summary = pipeline.run_schedule(AS_OF.timestamp() + 30 * SECONDS_PER_DAY)

        # THEN each user is one item holding both the state and the latest risk
        items = aws.items(stage_env["RISK_TABLE"])
        stored = _stored_state(aws).subset(few.user_ids)
        runtime.clear()
    assert len(items) == len(few.user_ids) == summary["users_scored"]
    assert all("state" in i for i in items)
    written = sum(i["as_of"] == "2026-07-01T00:00:00Z" for i in items)
    assert written + summary["risk_writes_skipped"] == len(items)
    # AND the schedule's score kept the state the file wrote (an update, not a put, on a shared item)
    np.testing.assert_array_equal(stored.values, build_state(few).values)
    assert pipeline.tables.calls["PutItem"] == 0


def test_each_user_costs_one_conditional_write_per_item_and_one_per_message(aws, population, tmp_path):
    runtime.clear()
    pipeline = runtime.get_pipeline()
    aws.land("incoming/a.csv", csv_bytes(population, tmp_path))

    summary = pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())

    users = len(population.user_ids)
    messages = summary["messages_sent"]
    sent = sum(messages.values())
    # state and risk read 100 users a call; one put per state and risk item; one mark per message sent
    assert pipeline.tables.calls == {"BatchGetItem": 2 * -(-users // 100), "PutItem": 2 * users, "UpdateItem": sent}
    assert pipeline.queues.calls == sum(-(-n // 10) for n in messages.values())


def test_event_for_a_deleted_file_is_reported_not_retried(aws, client, population, tmp_path):
    event = aws.land("incoming/gone.csv", csv_bytes(population, tmp_path))
    aws.s3.delete_object(Bucket=aws.settings.behaviour_bucket, Key="incoming/gone.csv")
    event["Records"][0]["s3"]["object"].pop("versionId")

    [summary] = _invoke(client, "on_behaviour_file", event)

    assert summary["status"] == "gone"
    assert aws.items(aws.settings.risk_table) == []


def test_run_summary_is_one_structured_log_line(aws, client, population, tmp_path, caplog):
    from chalicelib.observability import logger

    logger.setLevel("INFO")
    [summary] = _invoke(client, "on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(population, tmp_path)))

    records = [r for r in caplog.records if r.getMessage() == "run summary"]
    assert len(records) == 1
    line = json.loads(logger.registered_formatter.format(records[0]))
    assert line["service"] == "churnguard"
    assert line["summary"]["run_id"] == summary["run_id"]
    assert line["summary"]["rows"] == summary["rows"]


def test_account_manager_tasks_go_to_their_own_queue_when_one_is_named(monkeypatch, aws, population, tmp_path):
    # GIVEN a stage that names a queue for account-manager tasks
    monkeypatch.setenv("QUEUE_ACCOUNT_MANAGER", "churnguard-account-manager-test")
    runtime.clear()
    settings = Settings.from_env()
    ensure_resources(settings)
    aws.settings = settings
    aws.land("incoming/a.csv", csv_bytes(population, tmp_path))

    # WHEN a file is scored
    summary = runtime.get_pipeline().process_object("incoming/a.csv", None, AS_OF.timestamp())

    # THEN the high-value high-risk users' tasks are in that queue, and only theirs
    tasks = aws.drain("account_manager")
    assert len(tasks) == summary["messages_sent"]["account_manager"] > 0
    assert {(m["body"]["risk_tier"], m["body"]["value_tier"], m["attributes"]["channel"]) for m in tasks} == {
        ("high", "high", "account_manager")
    }
    others = aws.drain("high") + aws.drain("medium")
    assert others and all(m["attributes"]["channel"] != "account_manager" for m in others)
