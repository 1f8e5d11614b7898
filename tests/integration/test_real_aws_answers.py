"""The handlers under the answers real AWS gives and moto does not (the strict-AWS layer, tests/strict_aws.py):
missing keys under the stage's own policy, S3's 1,024-byte keys, and messages SQS refuses."""

from __future__ import annotations

import json
from collections import Counter

from chalicelib import runtime
from chalicelib.scoring.events import SECONDS_PER_DAY, EventBatch
from chalicelib.scoring.state import build_state
from churnguard_offline.lambda_events import scheduled
from tests.integration.conftest import AS_OF, csv_bytes, gz_truncated

BAD = "\uffff"  # a character SQS refuses in a message
MAX_KEY_BYTES = 1024  # S3's limit on a key, in UTF-8 bytes
HASH_MARK = "~sha256-"  # what a hashed name holds before the key's digest


def _invoke(client, name, event):
    return client.lambda_.invoke(name, event).payload


def _key_of(bytes_: int, ending: str) -> str:
    """Return a key under incoming/ of exactly `bytes_` UTF-8 bytes, with two-byte characters in it."""
    stem = "incoming/" + "é" * 200
    fill = bytes_ - len(stem.encode()) - len(ending.encode())
    return stem + "k" * fill + ending


def test_the_first_file_run_and_the_first_schedule_read_no_missing_key_as_access_denied(
    aws, client, population, tmp_path
):
    # GIVEN a fresh bucket (no checkpoint, run record, dead letter or opt-out list yet) under the stage's policy
    few = population.select(population.user_index < 60)
    # WHEN the first file is scored and the first schedule runs
    [summary] = _invoke(client, "on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(few, tmp_path)))
    schedule = _invoke(client, "scheduled_scoring", scheduled(AS_OF.timestamp() + SECONDS_PER_DAY))
    # THEN both finish: every probe for a key that is not there answered 404, none 403
    assert summary["status"] == "succeeded" and schedule["status"] == "succeeded"
    assert aws.strict.refused == []


def test_a_key_too_long_to_copy_whole_gets_hashed_rejected_and_quarantine_names(aws, client, population, tmp_path):
    # GIVEN two files whose keys are at S3's limit: one with a bad row, one unreadable
    few = population.select(population.user_index < 20)
    with_reject = _key_of(MAX_KEY_BYTES, ".csv")
    unreadable = _key_of(MAX_KEY_BYTES, "-x.csv.gz")
    assert len(with_reject.encode()) == len(unreadable.encode()) == MAX_KEY_BYTES
    data = csv_bytes(few, tmp_path, extra="u1,not-a-time,login,\n")

    # WHEN both are processed
    [scored] = _invoke(client, "on_behaviour_file", aws.land(with_reject, data))
    [moved] = _invoke(client, "on_behaviour_file", aws.land(unreadable, gz_truncated(data)))

    # THEN the rejected rows are kept under a hashed name that fits, with the original key beside them
    assert scored["status"] == "succeeded" and scored["rows"]["rejected"] == 1
    [rejected, source] = sorted(aws.keys("rejected/"), key=lambda k: not k.endswith(".csv"))
    assert source == rejected.removesuffix(".csv") + ".source.json"
    assert scored["rejected_file"] == f"s3://{aws.settings.behaviour_bucket}/{rejected}"
    assert HASH_MARK in rejected and rejected.endswith(".csv") and len(rejected.encode()) <= MAX_KEY_BYTES
    assert json.loads(aws.get(source))["key"] == with_reject
    assert b"not-a-time" in aws.get(rejected)
    # AND the unreadable file is quarantined under a hashed name, its reason naming the original key
    assert moved["status"] == "unreadable" and HASH_MARK in moved["moved_to"]
    assert sorted(aws.keys("quarantine/")) == sorted([moved["moved_to"], moved["moved_to"] + ".reason.json"])
    assert all(len(k.encode()) <= MAX_KEY_BYTES for k in aws.keys("quarantine/"))
    assert json.loads(aws.get(moved["moved_to"] + ".reason.json"))["key"] == unreadable
    assert aws.keys("incoming/") == [with_reject]
    # AND a redelivery of either finds its ledger record and does nothing
    again = [_invoke(client, "on_behaviour_file", aws.land(with_reject, data))]
    assert again[0][0]["status"] == "duplicate"
    assert aws.strict.refused == []


def _with_unsendable_ids(batch: EventBatch, every: int) -> EventBatch:
    """Return the batch with every `every`-th user's id holding a character SQS refuses."""
    ids = [uid + BAD if i % every == 0 else uid for i, uid in enumerate(batch.user_ids)]
    return EventBatch(ids, batch.user_index, batch.time, batch.type_code, batch.value)


def test_a_message_sqs_refuses_is_dead_lettered_alone_and_the_rest_of_its_batch_goes_once(
    aws, client, population, tmp_path
):
    # GIVEN a file in which some users' ids hold U+FFFF, which SQS refuses in a message body
    events = _with_unsendable_ids(population.select(population.user_index < 200), every=7)
    event = aws.land("incoming/a.csv", csv_bytes(events, tmp_path))

    # WHEN it is processed, and its event delivered again (a Lambda retry)
    [summary] = _invoke(client, "on_behaviour_file", event)
    [again] = _invoke(client, "on_behaviour_file", event)

    # THEN the refused messages are dead-lettered alone, each with its reason; the run says so
    record = json.loads(aws.get(f"dead-letter/{summary['run_id']}.json"))
    refused = record["messages"]
    assert refused and all(BAD in m["body"]["user_id"] for m in refused)
    assert all(m["refused"].startswith("InvalidMessageContents") for m in refused)
    assert summary["status"] == "incomplete" and summary["delivery"]["messages_refused"] == len(refused)
    assert ("SendMessageBatch", "InvalidMessageContents") in aws.strict.refused
    # AND every other message went out exactly once, the retry sending nothing
    assert again["status"] == "duplicate"
    bodies = aws.drain_all()
    ids = Counter(b["message_id"] for b in bodies)
    assert bodies and max(ids.values()) == 1 and not any(BAD in b["user_id"] for b in bodies)
    assert sum(summary["messages_sent"].values()) == len(bodies)
    claimed = {r["contact_message_id"] for r in aws.items(aws.settings.risk_table) if r.get("contact_message_id")}
    assert claimed == set(ids) | {m["body"]["message_id"] for m in refused}
    # AND the users were all scored (a refused message costs only itself)
    assert summary["users_scored"] == len(build_state(events))

    # WHEN the run is replayed THEN the refused messages are not sent again and stay, with their reasons
    runtime.clear()
    replayed = runtime.get_pipeline().replay(summary["run_id"])
    assert replayed["status"] == "incomplete" and aws.drain_all() == []
    assert json.loads(aws.get(f"dead-letter/{summary['run_id']}.json"))["messages"] == refused
