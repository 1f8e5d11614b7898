"""Faults on the way to DynamoDB and SQS: each run ends with every user written once and every message sent once.

Faults are injected where they happen: throttling as HTTP error responses in front of moto (so botocore's
own retry handler answers them), partial batch failures and crashes on the pipeline's real clients.
The clients here use botocore's "standard" retry mode: the same retries and error classes as the
deployed "adaptive" mode, without its client-side rate limiter, which would slow a test to a crawl.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from moto.core.botocore_stubber import BotocoreStubber, MockRawResponse

from chalicelib.aws import queues as aws_sqs
from chalicelib.scoring.state import build_state
from churnguard_offline.cli import main
from tests.integration.conftest import AS_OF, assert_every_user_once_and_every_message_once, csv_bytes, make_pipeline


class Crash(Exception):
    """The process dies here (a Lambda timeout or an out-of-memory kill, seen from the code)."""


@pytest.fixture
def pipeline(aws, no_sleep):
    return make_pipeline(aws.settings)


def on_request(client, handler) -> None:
    """Run `handler(operation, request)` before each request of `client` leaves; a response it returns is the answer."""

    def hook(request, event_name, **_):
        return handler(event_name.rsplit(".", 1)[-1], request)

    client.meta.events.register_first("before-send", hook)


def crash_then_redeliver(aws, pipeline, batch, tmp_path, crash_at) -> dict:
    """Land a file, let the process die before the first request `crash_at(operation)` picks, then redeliver.

    The redelivered event runs in a fresh container (new clients), like a Lambda retry; return its summary.
    """
    armed = {"on": True}

    def hook(op, _request):
        if armed["on"] and crash_at(op):
            raise Crash(f"killed before {op}")

    on_request(pipeline.tables.client, hook)
    on_request(pipeline.queues.client, hook)
    aws.land("incoming/a.csv", csv_bytes(batch, tmp_path))
    with pytest.raises(Crash):
        pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())
    armed["on"] = False
    checkpoints = aws.keys("checkpoints/")
    done = json.loads(aws.get(checkpoints[0]))["done"] if checkpoints else 0
    again = make_pipeline(aws.settings).process_object("incoming/a.csv", None, AS_OF.timestamp())
    again["checkpoint_before_redo"] = done
    return again


def failing_entries(real_send, choose):
    """Return a SendMessageBatch whose entries picked by `choose(entries)` fail (not the sender's fault)."""

    def send_message_batch(QueueUrl, Entries):
        bad = choose(Entries)
        good = [e for e in Entries if e not in bad]
        resp = real_send(QueueUrl=QueueUrl, Entries=good) if good else {"Successful": []}
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in bad]
        return {**resp, "Failed": resp.get("Failed", []) + failed}

    return send_message_batch


def _body(entry) -> dict:
    return json.loads(entry["MessageBody"])


THROTTLED = {
    "dynamodb": (400, b'{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}'),
    "sqs": (400, b'{"__type":"com.amazonaws.sqs#ThrottlingException","message":"Rate exceeded"}'),
    "s3": (503, b"<Error><Code>SlowDown</Code><Message>Reduce your request rate</Message></Error>"),
}


@pytest.fixture
def throttle_every_third(monkeypatch):
    """Moto answers every third request of each operation with a throttling error, without executing it."""
    real = BotocoreStubber.__call__
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    switch = {"on": True}

    def call(self, event_name, request, **kwargs):
        service = event_name.split(".")[1]
        with lock:
            seen[event_name] += 1
            hit = switch["on"] and service in THROTTLED and seen[event_name] % 3 == 0
        if hit:
            status, body = THROTTLED[service]
            return AWSResponse(request.url, status, {}, MockRawResponse(body))
        return real(self, event_name, request, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", call)
    return switch


def test_throttling_on_every_third_call_is_retried_and_every_user_lands_once(
    aws, chunks_of_fifty, pipeline, small, tmp_path, warnings_logged, throttle_every_third
):
    # GIVEN DynamoDB, SQS and S3 that throttle every third request
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))

    # WHEN a file is processed
    summary = pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())
    throttle_every_third["on"] = False

    # THEN the throttled calls were retried, the run says so, and nothing was lost or doubled
    retries = summary["delivery"]["retries"]
    assert retries["PutItem"] > 0 and retries["SendMessageBatch"] > 0 and retries["BatchGetItem"] > 0
    assert "write_conflicts" not in summary["delivery"]
    bursts = [extra for msg, extra in warnings_logged if msg == "retries"]
    assert bursts and all(b["run_id"] == summary["run_id"] and b["retries"] for b in bursts)
    assert_every_user_once_and_every_message_once(aws, small, [summary])


def test_unprocessed_keys_and_a_failed_entry_per_batch_are_retried(aws, pipeline, small, tmp_path):
    # GIVEN BatchGetItem that leaves every key unprocessed on the first attempt of each request
    tables, sqs = pipeline.tables.client, pipeline.queues.client
    real_get, real_send = tables.batch_get_item, sqs.send_message_batch
    first_attempts: set[str] = set()

    def batch_get_item(RequestItems):
        ((table, request),) = RequestItems.items()
        token = json.dumps(request["Keys"], sort_keys=True)
        if token not in first_attempts:
            first_attempts.add(token)
            return {"Responses": {table: []}, "UnprocessedKeys": RequestItems}
        return real_get(RequestItems=RequestItems)

    # AND SendMessageBatch that fails one entry of every batch, once per message
    failed_once: set[str] = set()

    def first_new_entry(entries):
        fresh = [e for e in entries if _body(e)["message_id"] not in failed_once][:1]
        failed_once.update(_body(e)["message_id"] for e in fresh)
        return fresh

    tables.batch_get_item = batch_get_item
    sqs.send_message_batch = failing_entries(real_send, first_new_entry)
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))

    # WHEN a file is processed
    summary = pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())

    # THEN each fault was retried once, and nothing was lost or doubled
    retries = summary["delivery"]["retries"]
    assert retries["BatchGetItem.UnprocessedKeys"] == len(first_attempts)
    assert retries["SendMessageBatch.Failed"] == len(failed_once) == pipeline.queues.calls / 2
    bodies = assert_every_user_once_and_every_message_once(aws, small, [summary])
    assert len(bodies) == sum(summary["messages_sent"].values())


def test_unprocessed_keys_that_never_clear_dead_letter_their_users_and_replay_finishes_them(
    aws, pipeline, small, tmp_path
):
    # GIVEN BatchGetItem that never returns the keys of three users, through every retry
    stuck = set(small.user_ids[:3])
    tables = pipeline.tables.client
    real_get = tables.batch_get_item
    blocked = {"on": True}

    def batch_get_item(RequestItems):
        ((table, request),) = RequestItems.items()
        held = [k for k in request["Keys"] if blocked["on"] and k["user_id"] in stuck]
        rest = [k for k in request["Keys"] if k not in held]
        resp = real_get(RequestItems={table: {**request, "Keys": rest}}) if rest else {"Responses": {table: []}}
        resp["UnprocessedKeys"] = {table: {**request, "Keys": held}} if held else {}
        return resp

    tables.batch_get_item = batch_get_item
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))

    # WHEN a file is processed
    summary = pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())

    # THEN the run ends incomplete, those users kept for replay with their delta, and every other user done
    assert summary["status"] == "incomplete"
    record = json.loads(aws.get(f"dead-letter/{summary['run_id']}.json"))
    assert {u["user_id"] for u in record["users"]} == stuck and {u["mode"] for u in record["users"]} == {"delta"}
    assert summary["delivery"]["reads_failed"] == 3
    assert {i["user_id"] for i in aws.items(aws.settings.state_table)} == set(small.user_ids) - stuck

    # WHEN the reads clear and the run is replayed THEN every user is merged once and every message sent once
    blocked["on"] = False
    assert pipeline.replay(summary["run_id"])["status"] == "replayed"
    assert_every_user_once_and_every_message_once(aws, small)


@pytest.mark.parametrize(
    ("operation", "nth", "chunks_done"),
    [
        ("PutItem", 30, 0),  # state writes of the first chunk
        ("PutItem", 80, 0),  # risk writes of the first chunk
        ("PutItem", 260, 2),  # state writes of the third chunk
        ("SendMessageBatch", 3, None),  # between message batches (which chunk depends on the data)
    ],
)
def test_a_crash_mid_run_is_finished_by_the_redelivered_event_exactly_once(
    aws, chunks_of_fifty, pipeline, small, tmp_path, operation, nth, chunks_done
):
    # GIVEN a process that dies at the nth call of one operation, before the request leaves
    calls = Counter()
    lock = threading.Lock()

    def nth_call(op):
        with lock:
            calls[op] += 1
            return op == operation and calls[op] == nth

    # WHEN the event is delivered again (a Lambda retry) in a fresh container
    again = crash_then_redeliver(aws, pipeline, small, tmp_path, nth_call)

    # THEN the redo finished the run: every user merged once, every message sent once
    assert again["status"] == "succeeded"
    assert again["users_scored"] == len(small.user_ids)
    # it resumed where the checkpoint left by the dead process said
    assert again.get("resumed_after_chunks", 0) == again["checkpoint_before_redo"]
    if chunks_done is not None:
        assert again["checkpoint_before_redo"] == chunks_done
    bodies = assert_every_user_once_and_every_message_once(aws, small, [again])
    # what the dead process sent in the chunk it died in, the redo found sent and did not send again
    resent_not = again["delivery"].get("duplicates_suppressed", {}).get("messages", 0)
    assert len(bodies) == sum(again["messages_sent"].values()) + resent_not
    assert aws.keys("checkpoints/") == []


def test_a_crash_between_send_and_mark_resends_one_batch_under_the_same_ids(
    aws, chunks_of_fifty, pipeline, small, tmp_path
):
    # GIVEN a process that dies when marking its first message batch as sent (the batch went out)
    # WHEN the event is delivered again
    again = crash_then_redeliver(aws, pipeline, small, tmp_path, lambda op: op == "UpdateItem")

    # THEN every message arrived, and the only copies are of that one batch, with the same message ids
    assert again["status"] == "succeeded"
    bodies = aws.drain_all()
    copies = Counter(b["message_id"] for b in bodies)
    doubled = [mid for mid, n in copies.items() if n > 1]
    assert 0 < len(doubled) <= aws_sqs.BATCH and max(copies.values()) == 2
    risks = aws.items(aws.settings.risk_table)
    assert set(copies) == {r["contact_message_id"] for r in risks if "contact_message_id" in r}


def _contacted_users(pipeline, events) -> list[str]:
    """Return the users a run over `events` would send a message to: an action, and not in the holdout."""
    scores = pipeline.scorer.score(build_state(events), AS_OF.timestamp())
    playbook = pipeline.scorer.playbook
    return [
        u
        for u, a, tier in zip(scores.user_ids, scores.actions, scores.risk_tier)
        if a is not None and not playbook.in_holdout(u, tier)
    ]


def test_failures_that_outlive_retries_are_dead_lettered_and_replayed_exactly_once(aws, pipeline, small, tmp_path):
    # GIVEN three users whose state write, risk write and message keep failing after botocore's retries
    state_victim, risk_victim, message_victim = _contacted_users(pipeline, small)[:3]
    faults = {"on": True}
    tables, sqs = pipeline.tables.client, pipeline.queues.client
    real_put, real_send = tables.put_item, sqs.send_message_batch

    def put_item(**kwargs):
        item = kwargs["Item"]
        victim = state_victim if kwargs["TableName"] == aws.settings.state_table else risk_victim
        if faults["on"] and item["user_id"] == victim:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}
            raise ClientError({"Error": error, "ResponseMetadata": {"RetryAttempts": 7}}, "PutItem")
        return real_put(**kwargs)

    tables.put_item = put_item
    sqs.send_message_batch = failing_entries(
        real_send, lambda entries: [e for e in entries if faults["on"] and _body(e)["user_id"] == message_victim]
    )
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))

    # WHEN the run meets the faults
    summary = pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())

    # THEN it ends incomplete, keeping the two users' work and the one message for replay
    assert summary["status"] == "incomplete"
    assert summary["dead_letter"]["users"] == 2 and summary["dead_letter"]["messages"] == 1
    assert summary["delivery"]["dead_lettered"] == {"users": 2, "messages": 1}
    record = json.loads(aws.get(f"dead-letter/{summary['run_id']}.json"))
    assert {u["user_id"]: u["mode"] for u in record["users"]} == {state_victim: "delta", risk_victim: "score"}
    assert record["messages"][0]["body"]["user_id"] == message_victim
    assert {state_victim, risk_victim}.isdisjoint(i["user_id"] for i in aws.items(aws.settings.risk_table))
    # AND a redelivered event does not redo the merge
    assert pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())["status"] == "duplicate"

    # WHEN the faults clear and the run is replayed from the command line (in a fresh process)
    faults["on"] = False
    assert main(["replay", summary["run_id"]]) == 0

    # THEN every user has exactly one risk item and every message was sent exactly once
    bodies = assert_every_user_once_and_every_message_once(aws, small)
    assert len(bodies) == sum(summary["messages_sent"].values()) + 3
    assert aws.keys("dead-letter/") == []
    assert json.loads(aws.get(f"runs/{summary['run_id']}.json"))["status"] == "replayed"


def test_replay_of_an_unknown_run_exits_2_saying_there_is_no_such_run(aws, pipeline, capsys):
    assert main(["replay", "obj-nothing"]) == 2
    assert "no run obj-nothing: no run record, checkpoint or dead letters" in capsys.readouterr().err
