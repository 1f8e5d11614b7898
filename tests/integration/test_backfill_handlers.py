"""The backfill's handlers through chalice.test.Client on moto, driven from the item lists the split writes.

moto's Step Functions cannot invoke Lambda without Docker, so the state machine here only records the execution
(a Pass state); the test plays the map's part: every child of each item list, in shuffled order.
"""

from __future__ import annotations

import json
import random

import boto3
import pytest

from tests.integration.conftest import AS_OF, assert_every_user_once_and_every_message_once, csv_bytes
from tests.stepfunctions import Kill, run_repository_definition

KEY = "incoming/backfill/2026-06-01.csv"
PASS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


@pytest.fixture
def backfill_stage(aws, monkeypatch):
    """A stage with the backfill state machine deployed, whose files all go to it, in 4 ranges x 5 shards."""
    created = boto3.client("stepfunctions").create_state_machine(
        name="churnguard-dev-backfill",
        definition=json.dumps(PASS),
        roleArn="arn:aws:iam::123456789012:role/churnguard-dev-backfill",
    )
    monkeypatch.setenv("BACKFILL_STATE_MACHINE_ARN", created["stateMachineArn"])
    monkeypatch.setenv("BACKFILL_THRESHOLD_MB", "0.01")
    monkeypatch.setenv("BACKFILL_SHARDS", "5")
    return created["stateMachineArn"]


def land_past_the_threshold(aws, client, small, tmp_path, monkeypatch) -> tuple[dict, dict]:
    """Land the file, sized for 4 ranges; return its S3 event and the summary of its first delivery."""
    data = csv_bytes(small, tmp_path)
    monkeypatch.setenv("BACKFILL_RANGE_MB", str(len(data) / 3.8 / (1 << 20)))
    event = aws.land(KEY, data, event_time=AS_OF.timestamp())
    return event, invoke(client, "on_behaviour_file", event)[0]


def invoke(client, name: str, payload: dict) -> dict:
    response = client.lambda_.invoke(name, payload)
    assert response.payload is not None, name
    return response.payload


def test_a_file_past_the_threshold_runs_through_the_backfill_handlers_and_scores_every_user_once(
    aws, backfill_stage, client, small, tmp_path, monkeypatch
):
    # GIVEN a file past the threshold, landed on a stage with the backfill deployed
    # WHEN its S3 event arrives, twice
    event, first = land_past_the_threshold(aws, client, small, tmp_path, monkeypatch)
    again = invoke(client, "on_behaviour_file", event)[0]
    # THEN one execution is started, named after the run id, and nothing is scored in the S3 handler
    assert first["status"] == again["status"] == "handed_over" and first["run_id"] == again["run_id"]
    sfn = boto3.client("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=backfill_stage)["executions"]
    assert [e["name"] for e in executions] == [first["run_id"]]
    assert not aws.items(aws.settings.state_table)
    # WHEN the state machine's steps run: split, the ranges and the shards in shuffled order, then finish
    job = json.loads(sfn.describe_execution(executionArn=executions[0]["executionArn"])["input"])
    state = {**job, "split": {"result": invoke(client, "backfill_split", job)}}
    rng = random.Random(5)
    for kind, handler in (("ranges", "backfill_range"), ("shards", "backfill_shard")):
        todo = json.loads(aws.get(state["split"]["result"][f"{kind}_key"]))
        rng.shuffle(todo)
        for item in todo:
            invoke(client, handler, item)
    summary = invoke(client, "backfill_finish", state)
    # THEN every user is merged once and every message sent once, and the run is recorded and ledgered
    assert summary["status"] == "succeeded", summary
    assert summary["backfill"] == {"ranges": 4, "shards": 5, "ranges_failed": [], "shards_failed": []}
    assert summary["rows"]["scored"] == len(small)
    assert_every_user_once_and_every_message_once(aws, small, [summary])
    record = json.loads(aws.get(f"runs/{first['run_id']}.json"))
    assert record["status"] == "succeeded"
    assert not aws.keys("backfill/"), "the working objects are deleted"
    assert aws.strict.refused == []
    # ... and a later delivery of the same event is a duplicate that starts nothing
    assert invoke(client, "on_behaviour_file", event)[0]["status"] == "duplicate"


def test_the_backfill_state_machine_runs_the_real_handlers_with_a_shard_killed_mid_call_and_scores_once(
    aws, backfill_stage, client, small, tmp_path, monkeypatch
):
    # GIVEN a file past the threshold whose S3 event handed it to the backfill state machine
    _, handed = land_past_the_threshold(aws, client, small, tmp_path, monkeypatch)
    assert handed["status"] == "handed_over"
    sfn = boto3.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=backfill_stage)["executions"]
    job = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    # WHEN the repository's definition runs over the real handlers, children shuffled, the second shard child
    # killed at its fifth AWS call (a crash mid-chunk, its lease left held) and retried by the definition's own
    # Retry, the functions' clock moving on by each interval the retries wait
    kill = Kill("backfill_shard", invocation=2, at_call=5)
    ran = run_repository_definition(
        client, "backfill", aws.settings.behaviour_bucket, job, handed["run_id"], seed=11, kill=kill
    )
    # THEN the execution succeeds, the kill happened, and every user is merged once and every message sent once
    assert ran.status == "SUCCEEDED", (ran.error, ran.cause)
    assert kill.fired
    assert len(ran.calls_of("backfill_range")) == 4
    record = json.loads(aws.get(f"runs/{handed['run_id']}.json"))
    assert record["status"] == "succeeded", record["backfill"]
    assert "ShardBusy" in [i.outcome for i in ran.calls_of("backfill_shard")], "the retry waited out the dead lease"
    assert record["rows"]["scored"] == len(small)
    assert_every_user_once_and_every_message_once(aws, small, [record])
    assert aws.strict.refused == []
