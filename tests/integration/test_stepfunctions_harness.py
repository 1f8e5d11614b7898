"""The Step Functions harness (tests/stepfunctions.py) where it meets moto: real handlers, S3 item lists, kills at
an AWS call, and moto's own execution of a definition with its Tasks swapped for Pass states."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from chalice import Chalice
from chalice.test import Client
from moto import mock_aws

from tests.conftest import ROOT
from tests.stepfunctions import (
    ChaliceLambdas,
    Kill,
    StateMachineRunner,
    load_definition,
    moto_executes_state_machines,
    run_on_moto,
)

BUCKET = "harness-bucket"
REGION = "us-east-1"


class ShardUnreadable(Exception):
    """Raised by a handler of the test app: Lambda reports it by its class name."""


harness_app = Chalice(app_name="harness")


@harness_app.lambda_function(name="write_parts")
def write_parts(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Write three objects for one item, then answer with their keys (an idempotent worker)."""
    s3 = boto3.client("s3", region_name=REGION)
    keys = [f"out/{event['item']}/{part}" for part in ("a", "b", "c")]
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(event).encode())
    return {"keys": keys}


@harness_app.lambda_function(name="refuse")
def refuse(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise ShardUnreadable(f"shard {event.get('item')} is unreadable")


@harness_app.lambda_function(name="unmarshallable")
def unmarshallable(event: dict[str, Any], context: Any) -> Any:
    return {"when": object()}


@pytest.fixture
def moto_s3():
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield s3


@pytest.fixture
def lambdas(tmp_path, moto_s3) -> ChaliceLambdas:
    with Client(harness_app, project_dir=str(tmp_path)) as client:
        yield ChaliceLambdas(client)


def mapped(function: str, retry: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Distributed Map over the JSON item list at $.items_key, each child invoking `function` with its item."""
    worker = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function, "Payload": {"item.$": "$.item"}},
        "OutputPath": "$.Payload",
        "End": True,
    }
    if retry:
        worker["Retry"] = retry
    return {
        "StartAt": "Map",
        "States": {
            "Map": {
                "Type": "Map",
                "ItemReader": {
                    "Resource": "arn:aws:states:::s3:getObject",
                    "ReaderConfig": {"InputType": "JSON"},
                    "Parameters": {"Bucket": BUCKET, "Key.$": "$.items_key"},
                },
                "ItemSelector": {"item.$": "$$.Map.Item.Value"},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "Work",
                    "States": {"Work": worker},
                },
                "End": True,
            }
        },
    }


def objects(s3) -> dict[str, bytes]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="out/").get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


# ---- the app's handlers as Lambda answers ---------------------------------------------------------------------
def test_the_apps_handlers_are_the_task_functions_and_answer_as_lambda_does(lambdas):
    assert set(lambdas) == {"write_parts", "refuse", "unmarshallable"}
    assert lambdas["write_parts"]({"item": "x"}) == {"keys": ["out/x/a", "out/x/b", "out/x/c"]}
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke",
                "Parameters": {
                    "FunctionName": "arn:aws:lambda:us-east-1:1:function:harness-dev-refuse",
                    "Payload.$": "$",
                },
                "End": True,
            }
        },
    }
    # an unhandled exception is the error named after its class, its cause Lambda's error JSON
    failed = StateMachineRunner(definition, lambdas).run({"item": 4})
    assert failed.error == "ShardUnreadable"
    assert json.loads(failed.cause) == {"errorMessage": "shard 4 is unreadable", "errorType": "ShardUnreadable"}
    # a result JSON cannot hold is Lambda's marshalling error, not a Python object passed along
    definition["States"]["T"]["Parameters"]["FunctionName"] = "unmarshallable"
    assert StateMachineRunner(definition, lambdas).run({}).error == "Runtime.MarshalError"


def test_a_distributed_map_reads_its_item_list_from_s3_and_a_missing_list_fails_the_reader(lambdas, moto_s3):
    moto_s3.put_object(Bucket=BUCKET, Key="lists/r.json", Body=json.dumps(["i0", "i1", "i2"]).encode())
    execution = StateMachineRunner(mapped("write_parts"), lambdas, s3=moto_s3, seed=4).run(
        {"items_key": "lists/r.json"}
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert len(objects(moto_s3)) == 9
    missing = StateMachineRunner(mapped("write_parts"), lambdas, s3=moto_s3).run({"items_key": "lists/none.json"})
    assert missing.error == "States.ItemReaderFailed"


# ---- kills at an AWS call -------------------------------------------------------------------------------------
@pytest.mark.parametrize("at_call", [1, 2, 3, None], ids=["first-put", "second-put", "third-put", "before-return"])
def test_a_child_killed_at_any_aws_call_and_retried_leaves_what_a_clean_run_leaves(lambdas, moto_s3, at_call):
    # GIVEN a clean run's objects
    moto_s3.put_object(Bucket=BUCKET, Key="lists/r.json", Body=json.dumps([f"i{n}" for n in range(6)]).encode())
    payload = {"items_key": "lists/r.json"}
    retry = [{"ErrorEquals": ["Runtime.ExitError"], "MaxAttempts": 2}]
    clean = StateMachineRunner(mapped("write_parts", retry), lambdas, s3=moto_s3, seed=1).run(payload)
    expected = objects(moto_s3)
    for key in expected:
        moto_s3.delete_object(Bucket=BUCKET, Key=key)
    # WHEN item 2's child dies before its Nth AWS call (or just before it answers), and its Retry runs it again
    kill = Kill("write_parts", invocation=None, item=2, at_call=at_call)
    killed = StateMachineRunner(mapped("write_parts", retry), lambdas, s3=moto_s3, seed=1, kill=kill).run(payload)
    # THEN it died where it was told, was run once more, and everything is as the clean run left it
    assert kill.fired and kill.calls_before_death == (at_call or 1) - 1
    attempts = [i for i in killed.invocations if i.item == 2]
    assert [i.outcome for i in attempts] == ["Runtime.ExitError", "ok"]
    assert attempts[1].calls == 3
    assert (killed.status, killed.output) == ("SUCCEEDED", clean.output)
    assert objects(moto_s3) == expected


def test_a_dead_invocation_makes_no_further_aws_call(lambdas, moto_s3):
    moto_s3.put_object(Bucket=BUCKET, Key="lists/r.json", Body=json.dumps(["i0"]).encode())
    kill = Kill("write_parts", at_call=2)
    execution = StateMachineRunner(mapped("write_parts"), lambdas, s3=moto_s3, kill=kill).run(
        {"items_key": "lists/r.json"}
    )
    assert execution.error == "States.ExceedToleratedFailureThreshold"
    assert list(objects(moto_s3)) == ["out/i0/a"], "the first put landed; nothing after the death did"


# ---- moto's own Step Functions --------------------------------------------------------------------------------
@pytest.fixture
def moto_sfn():
    with mock_aws(), moto_executes_state_machines():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield s3, boto3.client("stepfunctions", region_name=REGION)


def test_moto_runs_a_distributed_map_over_an_s3_json_item_list_with_the_tasks_as_passes(moto_sfn):
    s3, sfn = moto_sfn
    s3.put_object(Bucket=BUCKET, Key="lists/r.json", Body=json.dumps(["i0", "i1", "i2"]).encode())
    execution = run_on_moto(sfn, mapped("write_parts"), {"write_parts": {"keys": ["k"]}}, {"items_key": "lists/r.json"})
    assert execution.status == "SUCCEEDED"
    assert execution.output == [{"keys": ["k"]}] * 3
    assert {"MapRunStarted", "MapRunSucceeded"} <= set(execution.event_types)


@pytest.mark.parametrize("name", ["backfill", "schedule"])
def test_moto_runs_each_repository_definition_with_its_tasks_as_passes(moto_sfn, name):
    # GIVEN the item lists the first worker names, in the bucket the definition reads
    s3, sfn = moto_sfn
    definition = load_definition(ROOT / "infra" / "statemachines" / f"{name}.asl.json", BUCKET)
    keys = {f"{kind}_key": f"workflows/{name}/r/{kind}.json" for kind in ("ranges", "shards", "segments")}
    for key in keys.values():
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps([{"i": i} for i in range(4)]).encode())
    # What the definitions read of their workers' answers: the item lists, the map's width, the run's status.
    planned = {**keys, "total_segments": 4, "max_concurrency": 2}
    handlers = {h: planned for h in ("backfill_split", "schedule_plan")}
    handlers |= {h: {"done": True} for h in ("backfill_range", "backfill_shard", "backfill_finish")}
    handlers |= {"schedule_segment": {"segment": 0, "status": "succeeded"}, "schedule_finish": {"status": "succeeded"}}
    # WHEN moto executes it
    execution = run_on_moto(sfn, definition, handlers, {"run_id": "r", "at": 0.0}, name="r")
    # THEN it succeeds through every map, each reading its list
    assert execution.status == "SUCCEEDED", execution.events[-1]
    maps = sum(1 for s in json.dumps(definition).split('"Type": "Map"')[1:])
    assert execution.event_types.count("MapRunStarted") == maps


def test_the_in_process_runner_and_moto_give_the_same_output_for_the_same_definition(moto_sfn):
    # GIVEN a definition of Pass states that exercises the data flow: a Choice, an intrinsic, a Distributed Map
    # reading an S3 JSON list with an ItemSelector, ResultSelector / ResultPath / OutputPath
    s3, sfn = moto_sfn
    s3.put_object(Bucket=BUCKET, Key="lists/r.json", Body=json.dumps([{"n": n} for n in range(5)]).encode())
    inner = mapped("write_parts")["States"]["Map"]
    inner["ItemSelector"] = {"run.$": "$.run", "n.$": "$$.Map.Item.Value.n", "index.$": "$$.Map.Item.Index"}
    inner["ItemProcessor"]["States"] = {"Work": {"Type": "Pass", "Parameters": {"seen.$": "$.n"}, "End": True}}
    inner.pop("End")
    inner.update(ResultPath="$.results", Next="Done")
    definition = {
        "StartAt": "Route",
        "States": {
            "Route": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.size", "NumericGreaterThan": 100, "Next": "Name"}],
                "Default": "Done",
            },
            "Name": {
                "Type": "Pass",
                "Parameters": {"label.$": "States.Format('run {} of {}', $.run, $.size)"},
                "ResultPath": "$.named",
                "Next": "Map",
            },
            "Map": inner,
            "Done": {"Type": "Pass", "OutputPath": "$", "End": True},
        },
    }
    payload = {"run": "r", "size": 1000, "items_key": "lists/r.json"}
    # WHEN both run it
    on_moto = run_on_moto(sfn, definition, {}, payload)
    in_process = StateMachineRunner(definition, {}, s3=s3, seed=9).run(payload)
    # THEN they agree
    assert on_moto.status == in_process.status == "SUCCEEDED"
    assert in_process.output == on_moto.output
    assert in_process.output["results"] == [{"seen": n} for n in range(5)]
