"""The schedule on its state machine through chalice.test.Client on moto: the handover, the plan's segment list,
the segment children in shuffled order, the finish; the shared message counter on DynamoDB transactions."""

from __future__ import annotations

import json
import random
import threading

import boto3
import pytest

from chalicelib.aws.caps import RunCapTable, counter_key
from chalicelib.retention.playbook import load_playbook
from chalicelib.runs.deadline import RunInterrupted
from chalicelib.runs.schedule_run import schedule_run_id
from chalicelib.scoring.events import SECONDS_PER_DAY
from churnguard_offline.lambda_events import scheduled
from tests.integration.conftest import AS_OF, csv_bytes
from tests.stepfunctions import Kill, run_repository_definition

PASS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
LATER = AS_OF.timestamp() + 60 * SECONDS_PER_DAY
CAP = 9


@pytest.fixture
def schedule_machine(aws, monkeypatch, tmp_path):
    """A deployed schedule state machine, one invocation's reach of 25 users, and a playbook capping runs at CAP."""
    created = boto3.client("stepfunctions").create_state_machine(
        name="churnguard-dev-schedule", definition=json.dumps(PASS), roleArn="arn:aws:iam::123456789012:role/sfn"
    )
    spec = load_playbook(None).spec
    playbook = tmp_path / "capped.json"
    playbook.write_text(json.dumps({**spec, "contact_policy": {**spec["contact_policy"], "max_messages_per_run": CAP}}))
    for name, value in {
        "SCHEDULE_STATE_MACHINE_ARN": created["stateMachineArn"],
        "SCHEDULE_INVOCATION_USERS": "25",
        "SCHEDULE_USERS_PER_SECOND": "100",
        "PLAYBOOK_FILE": str(playbook),
    }.items():
        monkeypatch.setenv(name, value)
    return created["stateMachineArn"]


def _invoke(client, name, event):
    return client.lambda_.invoke(name, event).payload


def _until_done(client, item):
    """Invoke a segment child as the state machine does: again after each RunInterrupted."""
    while True:
        try:
            return _invoke(client, "schedule_segment", item)
        except RunInterrupted:
            continue


def scored(aws, client, small, tmp_path) -> tuple[set[str], str]:
    """Land and score a file of the `small` population, its messages drained; return its users and the run id of
    the schedule at LATER."""
    _invoke(client, "on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(small, tmp_path)))
    users = {i["user_id"] for i in aws.items(aws.settings.state_table) if "state" in i}
    aws.drain_all()
    return users, schedule_run_id(LATER)


def test_a_schedule_past_one_invocation_runs_as_8_shuffled_segments_and_claims_exactly_the_cap(
    aws, client, schedule_machine, small, tmp_path
):
    # GIVEN two hundred users scored when their file landed, and a table past one invocation's reach
    users, run_id = scored(aws, client, small, tmp_path)
    # WHEN the schedule fires, twice (a duplicate delivery)
    handed = _invoke(client, "scheduled_scoring", scheduled(LATER))
    again = _invoke(client, "scheduled_scoring", scheduled(LATER))
    # THEN it handed over to one execution named after the run id, and the duplicate started nothing
    assert (handed["status"], again["status"]) == ("handed_over", "duplicate")
    executions = boto3.client("stepfunctions").list_executions(stateMachineArn=schedule_machine)["executions"]
    assert [e["name"] for e in executions] == [run_id]
    # WHEN the state machine's steps run: the plan, the children of the list it wrote in shuffled order, the finish
    planned = _invoke(client, "schedule_plan", {"run_id": run_id, "at": LATER})
    items = json.loads(aws.get(planned["segments_key"]))
    # (the table's item count holds the ledger's item for the file too: 201 items, 25 a segment)
    assert planned["total_segments"] == len(items) == 9
    random.Random(5).shuffle(items)
    children = [_until_done(client, item) for item in items]
    lifted = [_invoke(client, "schedule_segment", {"phase": "lift", "item": item}) for item in items]
    summary = _invoke(client, "schedule_finish", {"run_id": run_id, "at": LATER, "plan": planned})
    # THEN every user was scored once as of the schedule's time, and exactly the cap of messages went out
    assert {c["status"] for c in children} == {"succeeded"} == {c["status"] for c in lifted}
    assert summary["status"] == "succeeded"
    assert summary["users_scored"] == len(users)
    risk = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    rescored = {uid for uid, i in risk.items() if i["run_id"] == run_id and i["as_of"] == "2026-07-31T00:00:00Z"}
    # (a re-score that changes nothing a consumer reads leaves the stored item as it was, counted as skipped)
    assert rescored <= users and len(users - rescored) == summary["risk_writes_skipped"]
    sent = aws.drain_all()
    assert len(sent) == len({m["message_id"] for m in sent}) == summary["messages_claimed"] == CAP
    counter = aws.ddb.Table(aws.settings.state_table).get_item(Key={"user_id": counter_key(run_id)})["Item"]
    assert counter["cap_claimed"] == CAP
    # AND the run's record has the single-invocation schedule's shape, and the lift report is written
    record = json.loads(aws.get(f"runs/{run_id}.json"))
    assert {"users_scored", "risk_tier", "messages_sent", "as_of", "model_version", "lift_report"} <= set(record)
    assert json.loads(aws.get("reports/lift.json"))["as_of"] == "2026-07-31T00:00:00Z"
    assert not aws.keys("checkpoints/")
    assert not aws.strict.refused


def test_threads_racing_for_a_run_counter_on_dynamodb_take_exactly_the_cap(aws):
    # GIVEN one run's counter with a cap of 13 and 6 workers each wanting 8 messages, each a chunk of its own
    caps = RunCapTable(boto3.resource("dynamodb").meta.client, aws.settings.state_table)
    taken: list[str] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(8):
            if caps.grant("sched-race", f"seg-{w}/0", f"u{w}-{i}", 13):
                with lock:
                    taken.append(f"u{w}-{i}")

    # WHEN they race
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN exactly the cap was granted, each grant is on its chunk's item, and a redo of a grant takes no other
    assert len(taken) == 13 == caps.claimed("sched-race")
    granted = set().union(*(caps.granted("sched-race", f"seg-{w}/0") for w in range(6)))
    assert granted == set(taken)
    w = taken[0].removeprefix("u").split("-")[0]
    assert caps.grant("sched-race", f"seg-{w}/0", taken[0], 13) is True
    assert caps.claimed("sched-race") == 13


def test_the_schedule_state_machine_runs_the_real_handlers_with_a_segment_killed_mid_call_and_claims_the_cap(
    aws, client, schedule_machine, small, tmp_path
):
    # GIVEN two hundred scored users and a schedule event handed to the schedule state machine
    users, run_id = scored(aws, client, small, tmp_path)
    assert _invoke(client, "scheduled_scoring", scheduled(LATER))["status"] == "handed_over"
    sfn = boto3.client("stepfunctions")
    (execution,) = sfn.list_executions(stateMachineArn=schedule_machine)["executions"]
    job = json.loads(sfn.describe_execution(executionArn=execution["executionArn"])["input"])
    # WHEN the repository's definition runs over the real handlers, children shuffled, the third segment child
    # killed at its sixth AWS call (its lease left held) and retried by the definition, the functions' clock
    # moving on by each interval the retries wait
    kill = Kill("schedule_segment", invocation=3, at_call=6)
    ran = run_repository_definition(client, "schedule", aws.settings.behaviour_bucket, job, run_id, seed=7, kill=kill)
    # THEN the execution succeeds, every user is scored once as of the schedule, and exactly the cap went out
    assert ran.status == "SUCCEEDED", (ran.error, ran.cause)
    assert kill.fired
    record = json.loads(aws.get(f"runs/{run_id}.json"))
    assert record["status"] == "succeeded" and record["users_scored"] == len(users)
    risk = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    rescored = {uid for uid, i in risk.items() if i["as_of"] == "2026-07-31T00:00:00Z"}
    assert rescored <= users and len(users - rescored) == record["risk_writes_skipped"]
    sent = aws.drain_all()
    assert len(sent) == len({m["message_id"] for m in sent}) == CAP
    assert not aws.keys("checkpoints/")
    assert not aws.strict.refused
