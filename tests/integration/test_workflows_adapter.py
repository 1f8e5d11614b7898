"""The Step Functions adapter on moto: one execution per name, a second start of the same run harmless."""

from __future__ import annotations

import json

import boto3
import pytest

from chalicelib.aws.workflows import NotDeployedError, StateMachines, execution_arn

PASS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


@pytest.fixture
def machine_arn(aws):
    client = boto3.client("stepfunctions")
    created = client.create_state_machine(
        name="churnguard-test-backfill",
        definition=json.dumps(PASS),
        roleArn="arn:aws:iam::123456789012:role/churnguard-test-sfn",
    )
    return created["stateMachineArn"]


def test_an_execution_is_started_once_under_its_run_id_and_a_second_start_is_not_new(machine_arn):
    machines = StateMachines(boto3.client("stepfunctions"), {"backfill": machine_arn})

    first = machines.start("backfill", "obj-0123456789abcdef0123", {"key": "incoming/a.csv"})
    again = machines.start("backfill", "obj-0123456789abcdef0123", {"key": "incoming/a.csv", "changed": True})

    assert first.new and not again.new
    assert first.execution_arn == again.execution_arn == execution_arn(machine_arn, "obj-0123456789abcdef0123")
    listed = boto3.client("stepfunctions").list_executions(stateMachineArn=machine_arn)["executions"]
    assert [e["name"] for e in listed] == ["obj-0123456789abcdef0123"]


def test_a_machine_the_stage_does_not_deploy_is_unavailable_and_refused():
    machines = StateMachines(client=None, arns={})

    assert not machines.available("schedule")
    with pytest.raises(NotDeployedError, match="schedule state machine is not deployed"):
        machines.start("schedule", "sched-20261201T000000Z", {})
