"""The in-process ASL runner of tests/stepfunctions.py, on small definitions over plain Python functions.

What it must get right is what Step Functions does: how data flows through a state (InputPath, Parameters,
ResultSelector, ResultPath, OutputPath), which errors a Retry or Catch matches, how a Map hands out its items and
tolerates failures, and that a killed child is run again by its Retry. The moto-backed half (an item reader on
S3, a kill at an AWS call, the app's handlers, moto's own executions) is in tests/integration.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.stepfunctions import (
    Kill,
    StateMachineRunner,
    StatesError,
    UnsupportedError,
    intrinsic,
    load_definition,
    render,
    tasks_as_passes,
)

BUCKET = "churnguard-behaviour-dev"


def task(function: str, **fields: Any) -> dict[str, Any]:
    """A lambda:invoke Task of `function`, its payload the state's input unless Parameters say otherwise."""
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": function, "Payload.$": "$"},
        "ResultSelector": {"out.$": "$.Payload"},
        "End": True,
    }
    return {**state, **fields}


def machine(**states: dict[str, Any]) -> dict[str, Any]:
    return {"StartAt": next(iter(states)), "States": states}


class FakeS3:
    """Just what an ItemReader calls: get_object and the list_objects_v2 paginator, over a dict of keys."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = {k: v if isinstance(v, str) else json.dumps(v) for k, v in objects.items()}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[Key].encode())}

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        objects = self.objects

        class Pages:
            def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
                contents = [
                    {"Key": k, "Size": len(v), "ETag": '"e"', "StorageClass": "STANDARD"}
                    for k, v in sorted(objects.items())
                    if k.startswith(Prefix)
                ]
                return [{"Contents": contents}]

        return Pages()


def flaky(failures: list[str], result: Any = None) -> Any:
    """A function that raises the given errors in turn, then returns `result` (or its payload)."""

    def call(payload: Any) -> Any:
        if failures:
            raise StatesError(failures.pop(0), "injected")
        return payload if result is None else result

    return call


# ---- data flow ----------------------------------------------------------------------------------------------
def test_a_task_hands_its_parameters_and_places_the_selected_result_at_its_result_path():
    # GIVEN a Task whose payload is built from the input, an intrinsic and the context object
    definition = machine(
        T=task(
            "churnguard-dev-score",
            InputPath="$.job",
            Parameters={
                "FunctionName": "arn:aws:lambda:us-east-1:1:function:churnguard-dev-score",
                "Payload": {
                    "run_id.$": "$.run",
                    "key.$": "States.Format('shards/{}/{}.json', $.run, $.n)",
                    "execution.$": "$$.Execution.Name",
                },
            },
            ResultSelector={"scored.$": "$.Payload.scored"},
            ResultPath="$.job.result",
            OutputPath="$.job",
        )
    )
    seen = []

    def score(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        return {"scored": 7, "ignored": True}

    # WHEN it runs
    execution = StateMachineRunner(definition, {"churnguard-dev-score": score}).run(
        {"job": {"run": "r1", "n": 3}, "other": 1}, name="r1"
    )
    # THEN the function got the evaluated payload and the output is the selected result in place
    assert execution.status == "SUCCEEDED", execution.cause
    assert seen == [{"run_id": "r1", "key": "shards/r1/3.json", "execution": "r1"}]
    assert execution.output == {"run": "r1", "n": 3, "result": {"scored": 7}}


def test_a_null_result_path_keeps_the_input_and_a_path_to_nothing_is_a_runtime_error():
    definition = machine(T=task("f", ResultPath=None))
    assert StateMachineRunner(definition, {"f": lambda p: {"x": 1}}).run({"keep": 1}).output == {"keep": 1}
    broken = machine(T=task("f", InputPath="$.missing"))
    execution = StateMachineRunner(broken, {"f": lambda p: p}).run({})
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime")


def test_intrinsic_functions_evaluate_as_step_functions_does():
    import random

    data = {"a": [1, 2, 3, 4, 5], "s": "x,y", "o": {"k": 1}}
    rng = random.Random(0)
    assert intrinsic("States.ArrayPartition($.a, 2)", data, {}, rng) == [[1, 2], [3, 4], [5]]
    assert intrinsic("States.ArrayRange(0, 8, 4)", data, {}, rng) == [0, 4, 8]
    assert intrinsic("States.ArrayLength($.a)", data, {}, rng) == 5
    assert intrinsic("States.MathAdd(States.ArrayLength($.a), -1)", data, {}, rng) == 4
    assert intrinsic("States.StringSplit($.s, ',')", data, {}, rng) == ["x", "y"]
    assert intrinsic("States.JsonToString($.o)", data, {}, rng) == '{"k":1}'
    assert intrinsic("States.Format('a\\'{}', $.s)", data, {}, rng) == "a'x,y"
    with pytest.raises(StatesError) as failure:
        intrinsic("States.Format('{} {}', $.s)", data, {}, rng)
    assert failure.value.error == "States.IntrinsicFailure"


def test_a_state_output_past_256_kib_is_data_limit_exceeded_which_no_catch_takes():
    definition = machine(
        T=task("f", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught"}], End=None, Next="Done"),
        Caught={"Type": "Succeed"},
        Done={"Type": "Succeed"},
    )
    definition["States"]["T"].pop("End")
    execution = StateMachineRunner(definition, {"f": lambda p: "x" * 300_000}).run({})
    assert (execution.status, execution.error) == ("FAILED", "States.DataLimitExceeded")


# ---- errors ---------------------------------------------------------------------------------------------------
def test_retry_retries_a_matching_error_up_to_its_max_attempts_without_waiting():
    retry = [{"ErrorEquals": ["Lambda.TooManyRequestsException"], "MaxAttempts": 2, "IntervalSeconds": 3}]
    definition = machine(T=task("f", Retry=retry))
    twice = ["Lambda.TooManyRequestsException"] * 2
    started = time.monotonic()
    execution = StateMachineRunner(definition, {"f": flaky(twice, {"ok": 1})}).run({})
    assert execution.status == "SUCCEEDED" and execution.output == {"out": {"ok": 1}}
    assert execution.waited_seconds == 3 + 6 and time.monotonic() - started < 1, "backoff counted, not slept"
    thrice = ["Lambda.TooManyRequestsException"] * 3
    execution = StateMachineRunner(definition, {"f": flaky(thrice)}).run({})
    assert (execution.status, execution.error) == ("FAILED", "Lambda.TooManyRequestsException")
    assert len(execution.calls_of("f")) == 3


def test_catch_routes_an_error_with_its_name_and_cause_at_the_result_path():
    definition = machine(
        T=task("f", End=None, Next="Done", Catch=[{"ErrorEquals": ["ValueError"], "ResultPath": "$.e", "Next": "Bad"}]),
        Bad={"Type": "Pass", "End": True},
        Done={"Type": "Succeed"},
    )
    definition["States"]["T"].pop("End")
    execution = StateMachineRunner(definition, {"f": flaky(["ValueError"])}).run({"in": 1})
    assert execution.status == "SUCCEEDED"
    assert execution.output == {"in": 1, "e": {"Error": "ValueError", "Cause": "injected"}}


def test_the_first_matching_retrier_decides_and_task_failed_matches_any_task_error():
    retry = [
        {"ErrorEquals": ["KeyError"], "MaxAttempts": 0},
        {"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 5},
    ]
    definition = machine(T=task("f", Retry=retry))
    assert StateMachineRunner(definition, {"f": flaky(["KeyError"])}).run({}).error == "KeyError"
    assert StateMachineRunner(definition, {"f": flaky(["OSError"] * 4)}).run({}).status == "SUCCEEDED"


def test_an_unknown_function_is_resource_not_found():
    execution = StateMachineRunner(machine(T=task("nope")), {}).run({})
    assert execution.error == "Lambda.ResourceNotFoundException"


# ---- the other states ---------------------------------------------------------------------------------------
def test_choice_routes_by_its_rules_and_fails_when_none_matches_without_a_default():
    definition = machine(
        C={
            "Type": "Choice",
            "Choices": [
                {
                    "And": [{"Variable": "$.n", "NumericGreaterThan": 10}, {"Variable": "$.tag", "IsPresent": True}],
                    "Next": "Big",
                },
                {"Variable": "$.kind", "StringMatches": "gz*", "Next": "Gzip"},
                {"Not": {"Variable": "$.n", "NumericLessThanEqualsPath": "$.limit"}, "Next": "Over"},
            ],
        },
        Big={"Type": "Pass", "Result": "big", "End": True},
        Gzip={"Type": "Pass", "Result": "gzip", "End": True},
        Over={"Type": "Pass", "Result": "over", "End": True},
    )
    runner = StateMachineRunner(definition, {})
    assert runner.run({"n": 11, "tag": 1}).output == "big"
    assert runner.run({"n": 11, "kind": "gzip"}).output == "gzip"
    assert runner.run({"n": 5, "limit": 4}).output == "over"
    assert runner.run({"n": 5, "limit": 6}).error == "States.NoChoiceMatched"


def test_pass_wait_succeed_and_fail():
    definition = machine(
        P={"Type": "Pass", "Parameters": {"x.$": "$.a"}, "ResultPath": "$.p", "Next": "W"},
        W={"Type": "Wait", "Seconds": 600, "Next": "F"},
        F={"Type": "Fail", "ErrorPath": "$.p.x", "Cause": "stopped"},
    )
    started = time.monotonic()
    execution = StateMachineRunner(definition, {}).run({"a": "Custom.Stop"})
    assert (execution.error, execution.cause) == ("Custom.Stop", "stopped")
    assert execution.waited_seconds == 600 and time.monotonic() - started < 1


# ---- Map ----------------------------------------------------------------------------------------------------
def distributed(reader: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    state = {
        "Type": "Map",
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            **machine(W=task("work", ResultSelector=None, OutputPath="$.Payload")),
        },
        "End": True,
    }
    state["ItemProcessor"]["States"]["W"].pop("ResultSelector")
    if reader:
        state["ItemReader"] = reader
    return {**state, **fields}


def json_reader(key: str = "items.json") -> dict[str, Any]:
    return {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket": BUCKET, "Key": key},
    }


def recorder() -> tuple[list[Any], Any]:
    order: list[Any] = []

    def work(payload: Any) -> Any:
        order.append(payload["item"]["n"])
        return payload["item"]["n"] * 10

    return order, work


def test_a_distributed_map_reads_its_json_items_and_runs_them_in_a_shuffled_order_from_the_seed():
    # GIVEN an item list of twelve items in S3 and a map that hands each child the run id and its item
    s3 = FakeS3({"items.json": [{"n": n} for n in range(12)]})
    definition = machine(M=distributed(json_reader(), ItemSelector={"run.$": "$.run", "item.$": "$$.Map.Item.Value"}))
    orders = []
    for seed in (1, 1, 2):
        order, work = recorder()
        # WHEN it runs with a seed
        execution = StateMachineRunner(definition, {"work": work}, s3=s3, seed=seed).run({"run": "r"})
        orders.append(order)
        # THEN every item ran once, and the output keeps the items' order
        assert execution.output == [n * 10 for n in range(12)]
        assert sorted(order) == list(range(12))
    # AND the same seed gives the same order, another seed another, neither the items' own
    assert orders[0] == orders[1] != orders[2]
    assert orders[0] != list(range(12))


def test_an_inline_map_takes_its_items_from_items_path_and_one_failure_fails_it():
    definition = machine(
        M={
            "Type": "Map",
            "ItemsPath": "$.shards",
            "ItemSelector": {"index.$": "$$.Map.Item.Index", "item.$": "$$.Map.Item.Value"},
            "ItemProcessor": machine(P={"Type": "Pass", "End": True}),
            "End": True,
        }
    )
    output = StateMachineRunner(definition, {}).run({"shards": ["a", "b"]}).output
    assert output == [{"index": 0, "item": "a"}, {"index": 1, "item": "b"}]
    failing = machine(M={**definition["States"]["M"], "ItemProcessor": machine(F={"Type": "Fail", "Error": "Bad"})})
    assert StateMachineRunner(failing, {}).run({"shards": ["a"]}).error == "Bad"


@pytest.mark.parametrize(
    ("tolerance", "status"),
    [({}, "FAILED"), ({"ToleratedFailureCount": 2}, "SUCCEEDED"), ({"ToleratedFailurePercentage": 10}, "FAILED")],
)
def test_a_distributed_map_tolerates_failed_children_up_to_its_threshold(tolerance, status):
    s3 = FakeS3({"items.json": [{"n": n} for n in range(10)]})
    definition = machine(M=distributed(json_reader(), ItemSelector={"item.$": "$$.Map.Item.Value"}, **tolerance))

    def work(payload: Any) -> Any:
        if payload["item"]["n"] in (3, 7):
            raise StatesError("ShardFailed", "bad shard")
        return payload["item"]["n"]

    execution = StateMachineRunner(definition, {"work": work}, s3=s3).run({})
    assert execution.status == status
    if status == "FAILED":
        assert execution.error == "States.ExceedToleratedFailureThreshold"
    else:
        assert execution.output == [0, 1, 2, None, 4, 5, 6, None, 8, 9]


def test_a_distributed_map_lists_objects_and_batches_items():
    s3 = FakeS3({"shards/r/0.json": "[]", "shards/r/1.json": "[]", "shards/r/2.json": "[]", "other/x": ""})
    reader = {"Resource": "arn:aws:states:::s3:listObjectsV2", "Parameters": {"Bucket": BUCKET, "Prefix": "shards/r/"}}
    definition = machine(M=distributed(reader, ItemBatcher={"MaxItemsPerBatch": 2, "BatchInput": {"run.$": "$.run"}}))
    seen = []
    execution = StateMachineRunner(definition, {"work": lambda p: seen.append(p) or len(p["Items"])}, s3=s3).run(
        {"run": "r"}
    )
    assert execution.output == [2, 1]
    assert [[i["Key"] for i in p["Items"]] for p in sorted(seen, key=lambda p: -len(p["Items"]))] == [
        ["shards/r/0.json", "shards/r/1.json"],
        ["shards/r/2.json"],
    ]
    assert all(p["BatchInput"] == {"run": "r"} for p in seen)


def test_children_on_threads_never_exceed_the_maps_max_concurrency():
    s3 = FakeS3({"items.json": list(range(16))})
    definition = machine(M=distributed(json_reader(), MaxConcurrency=3))
    running, peak, lock = [0], [0], threading.Lock()

    def work(payload: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return payload

    execution = StateMachineRunner(definition, {"work": work}, s3=s3, threads=8).run({})
    assert execution.output == list(range(16))
    assert 1 < peak[0] <= 3


def test_a_result_writer_is_refused_rather_than_ignored():
    definition = machine(M=distributed(json_reader(), ResultWriter={"Resource": "arn:aws:states:::s3:putObject"}))
    with pytest.raises(UnsupportedError):
        StateMachineRunner(definition, {"work": lambda p: p}, s3=FakeS3({"items.json": [1]})).run({})


# ---- kills --------------------------------------------------------------------------------------------------
def test_a_child_killed_before_it_returns_fails_once_and_its_retry_runs_it_again():
    # GIVEN a map whose children retry a dead process, and a kill aimed at item 5's child
    s3 = FakeS3({"items.json": [{"n": n} for n in range(8)]})
    definition = machine(M=distributed(json_reader(), ItemSelector={"item.$": "$$.Map.Item.Value"}))
    worker = definition["States"]["M"]["ItemProcessor"]["States"]["W"]
    worker["Retry"] = [{"ErrorEquals": ["Runtime.ExitError"], "MaxAttempts": 2}]
    kill = Kill("work", invocation=None, item=5)
    done: list[int] = []

    def work(payload: Any) -> Any:
        done.append(payload["item"]["n"])  # its work is done; the process dies before it answers
        return payload["item"]["n"]

    # WHEN it runs
    execution = StateMachineRunner(definition, {"work": work}, s3=s3, seed=3, kill=kill).run({})
    # THEN item 5 ran twice (killed, then retried), every other once, and the result is a clean run's
    assert kill.fired
    assert sorted(done) == sorted([*range(8), 5])
    assert [i.outcome for i in execution.invocations if i.item == 5] == ["Runtime.ExitError", "ok"]
    assert execution.output == list(range(8))


def test_a_kill_without_a_retry_fails_the_execution_with_lambdas_error_name():
    definition = machine(T=task("f"))
    kill = Kill("f", error="Sandbox.Timedout")
    execution = StateMachineRunner(definition, {"f": lambda p: p}, kill=kill).run({})
    assert (execution.status, execution.error) == ("FAILED", "Sandbox.Timedout")
    assert json.loads(execution.cause)["errorType"] == "Sandbox.Timedout"


def test_a_kill_at_an_aws_call_is_refused_on_threads():
    with pytest.raises(ValueError):
        StateMachineRunner(machine(T=task("f")), {}, threads=2, kill=Kill("f", at_call=1))


# ---- the repository's definitions ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["backfill", "schedule"])
def test_each_repository_definition_runs_over_stand_in_workers_calling_each_worker(name):
    # GIVEN the definition with its placeholders filled in, and workers that write the item lists they name
    definition = load_definition(ROOT / "infra" / "statemachines" / f"{name}.asl.json", BUCKET)
    text = json.dumps(definition)
    s3 = FakeS3({})
    calls: list[str] = []

    def worker(handler: str) -> Any:
        def call(payload: Any) -> Any:
            calls.append(handler)
            keys = {f"{kind}_key": f"items/{name}/{kind}.json" for kind in ("ranges", "shards", "segments")}
            for key in keys.values():
                s3.objects[key] = json.dumps([{"i": i} for i in range(3)])
            # What the definitions read of a worker's answer: item lists, the map's width, the run's status.
            return {**keys, "total_segments": 3, "max_concurrency": 2, "status": "succeeded"}

        return call

    handlers = sorted(set(re.findall(r'"FunctionName": "(\w+)"', text)))
    # WHEN it runs
    execution = StateMachineRunner(definition, {h: worker(h) for h in handlers}, s3=s3).run({"run_id": "r", "at": 0.0})
    # THEN it succeeds, calling each worker, the mapped ones once per item
    assert execution.status == "SUCCEEDED", execution.cause
    assert set(calls) == set(handlers)
    assert BUCKET in text and "${" not in text


def test_render_fails_on_a_placeholder_it_has_no_value_for_as_templatefile_does():
    with pytest.raises(KeyError):
        render('{"a": "${x}"}', {})
    assert render('{"a": "${x}"}', {"x": "1"}) == {"a": "1"}


def test_tasks_become_pass_states_with_what_the_task_would_have_produced():
    definition = machine(
        T=task("f", ResultSelector={"k.$": "$.Payload.key"}, ResultPath="$.r", Retry=[{"ErrorEquals": ["X"]}])
    )
    swapped = tasks_as_passes(definition, {"f": {"key": "k1", "other": 2}})
    assert swapped["States"]["T"] == {"Type": "Pass", "Result": {"k": "k1"}, "ResultPath": "$.r", "End": True}
    assert definition["States"]["T"]["Type"] == "Task", "the definition given is left as it was"
    with pytest.raises(KeyError):
        tasks_as_passes(definition, {})


def test_run_ids_are_names_step_functions_accepts_for_an_execution():
    # Step Functions takes 1-80 characters, and only ASCII letters, digits, - and _ when logging is on (moto takes
    # anything): the executions are named after the run ids, so every kind of run id must be one.
    from chalicelib.runs.file_run import object_run_id
    from chalicelib.runs.schedule_run import schedule_run_id

    longest_key = "incoming/" + "k" * 1000
    for run_id in (object_run_id(BUCKET, longest_key, "v" * 1024), schedule_run_id(4_102_444_800.0)):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", run_id), run_id
