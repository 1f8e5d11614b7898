"""The stream of landed files through SQS, on moto behind the strict layer: S3 -> files queue -> on_behaviour_queue
with partial batch responses; the ledger in DynamoDB; the schedule's sweep draining the failed deliveries."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from chalicelib.runs.deadline import Deadline
from chalicelib.runs.file_run import object_run_id
from churnguard_offline.lambda_events import queued_notification, s3_object_created, scheduled, sqs_batch
from tests.integration.conftest import csv_bytes, make_pipeline
from tests.integration.test_kill_points import KillSwitch, kill_points, lease_runs_out, outcome, reset


def queue_url(aws, name: str) -> str:
    return aws.sqs.get_queue_url(QueueName=name)["QueueUrl"]


def receive(aws, name: str) -> list[dict]:
    """Receive what a queue holds now (each message hidden afterwards, as Lambda's poller leaves it)."""
    url, found = queue_url(aws, name), []
    while True:
        messages = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return found
        found += messages


def left_in(aws, name: str) -> int:
    """Return how many messages a queue still holds, visible or not."""
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=queue_url(aws, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def invoke(client, event: dict) -> list[str]:
    """Invoke on_behaviour_queue; return the ids of the messages it failed back."""
    response = client.lambda_.invoke("on_behaviour_queue", event).payload
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def events_merged(aws) -> int:
    return sum(int(s["events"]) for s in aws.items(aws.settings.state_table))


@pytest.fixture
def few(population):
    return population.select(population.user_index < 20)


def test_a_file_landed_in_s3_goes_through_the_files_queue_and_is_scored_once(aws, client, few, tmp_path):
    # GIVEN the bucket's notifications routed to the files queue, as on a stage whose delivery is `queue`
    s = aws.settings
    queue_arn = aws.sqs.get_queue_attributes(QueueUrl=queue_url(aws, s.files_queue), AttributeNames=["QueueArn"])
    aws.s3.put_bucket_notification_configuration(
        Bucket=s.behaviour_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn["Attributes"]["QueueArn"],
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": s.incoming_prefix}]}},
                }
            ]
        },
    )
    # WHEN a file lands under a key with a space, and the queue's messages (S3's test event first) reach the handler
    aws.s3.put_object(Bucket=s.behaviour_bucket, Key="incoming/day one/events.csv", Body=csv_bytes(few, tmp_path))
    messages = receive(aws, s.files_queue)
    event = sqs_batch([m["Body"] for m in messages], queue=s.files_queue, ids=[m["MessageId"] for m in messages])
    assert any("s3:TestEvent" in m["Body"] for m in messages) and any("%2F" in m["Body"] for m in messages)
    # THEN no message comes back, every user is merged, and the ledger has the file's record in DynamoDB
    assert invoke(client, event) == []
    assert {i["user_id"] for i in aws.items(s.state_table)} == set(few.user_ids)
    assert [r["status"] for r in aws.ledger()] == ["succeeded"] and aws.keys("ledger/") == []
    # AND the same messages delivered again change nothing
    assert invoke(client, event) == [] and events_merged(aws) == len(few)


def test_a_batch_with_one_bad_record_fails_that_record_alone(aws, client, few, tmp_path):
    # GIVEN a batch of a malformed body, a good file, an unreadable file and a file another invocation is running
    s = aws.settings
    now = time.time()
    good = queued_notification(aws.land("incoming/good.csv", csv_bytes(few, tmp_path), event_time=now))
    unreadable = queued_notification(aws.land("incoming/bad.csv", b"\x00\x01garbage", event_time=now))
    busy_event = aws.land("incoming/busy.csv", csv_bytes(few.select(few.user_index < 3), tmp_path), event_time=now)
    etag = busy_event["Records"][0]["s3"]["object"]["eTag"]
    run_id = object_run_id(s.behaviour_bucket, "incoming/busy.csv", etag)
    assert make_pipeline(s).tables.leases.take(run_id, "another invocation", now + 900, now) is None
    event = sqs_batch(["{not json", good, unreadable, queued_notification(busy_event)], ids=["m0", "m1", "m2", "m3"])
    # WHEN the batch is handled
    failed = invoke(client, event)
    # THEN only the busy file's message comes back; the good file is scored, the unreadable one quarantined
    assert failed == ["m3"]
    assert {r["status"] for r in aws.ledger()} == {"succeeded", "unreadable"}
    assert "quarantine/incoming/bad.csv" in aws.keys("quarantine/")


def test_the_same_file_in_two_batches_at_once_is_merged_once_and_a_loser_comes_back(aws, few, tmp_path):
    # GIVEN one file's notification in two batches handed to two containers at the same moment
    body = queued_notification(aws.land("incoming/day.csv", csv_bytes(few, tmp_path), event_time=time.time()))
    pipelines = [make_pipeline(aws.settings) for _ in range(2)]
    # WHEN both run
    with ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda p: p.process_queue_batch(sqs_batch([body]), Deadline()), pipelines))
    # THEN at most one failed its message back (the file was in progress in the other), and its redelivery is done
    failed = [r for r in responses if r["batchItemFailures"]]
    assert len(failed) <= 1
    for _ in failed:
        assert make_pipeline(aws.settings).process_queue_batch(sqs_batch([body]), Deadline())["batchItemFailures"] == []
    assert events_merged(aws) == len(few) and [r["status"] for r in aws.ledger()] == ["succeeded"]


def test_the_ledger_keeps_the_first_record_when_puts_race_and_is_never_read_as_users(aws):
    # GIVEN eight conditional puts of one content's record at once, each a different record
    s = aws.settings
    tables = make_pipeline(s).tables
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: tables.ledger.put("incoming/a.csv", "etag", {"run_id": "r", "n": i}), range(8)))
    # THEN one record stands, the one every reader finds, with a TTL of the ledger's retention
    [item] = aws.items(s.state_table, runs_own=True)
    assert tables.ledger.find("incoming/a.csv", "etag") == json.loads(item["ledger_record"])
    assert abs(int(item["expires_at"]) - (time.time() + s.ledger_retention_seconds)) < 60
    # AND neither the schedule's scan nor the exposure scan sees a user in it
    pages = list(tables.scan_states(None, 10, as_of=time.time()))
    assert [len(stored.batch) for stored, _ in pages] == [0] and tables.scan_exposures() == []


def test_the_schedule_drains_the_dead_letter_queue_and_the_failed_invocations(aws, client, few, tmp_path):
    # GIVEN a notification in the files queue's dead-letter queue, and Lambda's record of a failed invocation
    s = aws.settings
    now = time.time()
    dead = queued_notification(aws.land("incoming/a.csv", csv_bytes(few, tmp_path), event_time=now))
    failed_event = aws.land("incoming/b.csv", csv_bytes(few.select(few.user_index < 5), tmp_path), event_time=now)
    record = {"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": failed_event}
    aws.sqs.send_message(QueueUrl=queue_url(aws, s.files_dead_letter_queue), MessageBody=dead)
    aws.sqs.send_message(QueueUrl=queue_url(aws, s.files_failed_queue), MessageBody=json.dumps(record))
    aws.sqs.send_message(QueueUrl=queue_url(aws, s.files_dead_letter_queue), MessageBody="not a notification")
    # WHEN the schedule runs
    summary = client.lambda_.invoke("scheduled_scoring", scheduled(now + 60)).payload
    # THEN both files were swept and scored, and every message is gone, the malformed one dropped
    swept = sorted((f["key"] or "", f["status"]) for f in summary["swept_files"])
    assert ("incoming/a.csv", "succeeded") in swept and ("incoming/b.csv", "succeeded") in swept
    assert ("", "dropped") in swept
    assert left_in(aws, s.files_dead_letter_queue) == left_in(aws, s.files_failed_queue) == 0
    assert {i["user_id"] for i in aws.items(s.state_table)} == set(few.user_ids)


def test_the_schedule_lists_a_bounded_window_whatever_the_history_and_never_the_ledger(
    aws, monkeypatch, population, tmp_path
):
    # GIVEN a schedule that lists at most ten incoming keys a run
    aws.settings = replace(aws.settings, sweep_list_max_keys=10)
    listed: dict[int, list[str]] = {}
    for files in (3, 30):
        # WHEN it runs after `files` files were processed
        pipeline = make_pipeline(aws.settings)
        for i in range(files):
            key = f"incoming/{files}-{i:03}.csv"
            aws.land(key, csv_bytes(population.select(population.user_index == i), tmp_path))
            pipeline.process_object(key, None, time.time())
        prefixes: list[str] = []
        pipeline = make_pipeline(aws.settings)
        pipeline.bucket.client.meta.events.register(
            "provide-client-params.s3.ListObjectsV2", lambda params, seen=prefixes, **_: seen.append(params["Prefix"])
        )
        pipeline.run_schedule(time.time() + 86400 * len(listed))
        listed[files] = prefixes
    # THEN the incoming prefix is listed in the same one call either way, and ledger/ never
    assert [p for p in listed[3] if p.startswith("incoming/")] == ["incoming/"]
    assert [p for p in listed[30] if p.startswith("incoming/")] == ["incoming/"]
    assert not any(p.startswith("ledger") for p in listed[3] + listed[30])


# ---- a crash at every AWS call of a queued file, then a redelivery -----------------------------------------------
FILE_KEY = "incoming/a.csv"


def queued_run(aws, batch, tmp_path, switch: KillSwitch, landed_at: float) -> str | None:
    """Land the file and hand its notification to a fresh container with `switch` attached; return "done", or None
    when its message was failed back."""
    data = csv_bytes(batch, tmp_path)
    etag = aws.s3.put_object(Bucket=aws.settings.behaviour_bucket, Key=FILE_KEY, Body=data)["ETag"].strip('"')
    event = s3_object_created(aws.settings.behaviour_bucket, FILE_KEY, etag=etag, size=len(data), event_time=landed_at)
    pipeline = make_pipeline(aws.settings)
    pipeline.ctx.clock = lambda: landed_at + 60
    switch.attach(pipeline)
    response = pipeline.process_queue_batch(sqs_batch([queued_notification(event)], ids=["m0"]), Deadline())
    return None if response["batchItemFailures"] else "done"


def test_a_queued_file_killed_at_any_call_and_redelivered_ends_as_a_clean_run(aws, no_sleep, population, tmp_path):
    # GIVEN the outcome of a clean run of a three-chunk file through the queue handler
    aws.settings = replace(aws.settings, chunk_users=5)
    batch = population.select(population.user_index < 15)
    landed_at = time.time()
    clean = KillSwitch()
    assert queued_run(aws, batch, tmp_path, clean, landed_at) == "done"
    [record] = aws.ledger()
    run_id = record["run_id"]
    expected = outcome(aws, run_id)
    failures = []
    # WHEN a fresh attempt dies before each of its AWS calls in turn (its message failed back), and SQS redelivers
    for point in kill_points(clean.order):
        reset(aws)
        assert queued_run(aws, batch, tmp_path, KillSwitch(point), landed_at) is None, point
        lease_runs_out(aws)
        assert queued_run(aws, batch, tmp_path, KillSwitch(), landed_at) == "done", point
        # THEN the data, the run record's counts, the ledger and what is left are a clean run's
        got = outcome(aws, run_id, True)
        want = {**expected, "record": {k: v for k, v in expected["record"].items() if k in got["record"]}}
        got["record"] = {k: v for k, v in got["record"].items() if k in want["record"]}
        for part in ("states", "risks", "messages", "ledger", "left"):
            if got[part] != want[part]:
                failures.append(f"killed before {point}: {part} differs")
    assert failures == []
