"""The schedule state machine's definition fits the code it drives: its handlers, its errors, its item list."""

from __future__ import annotations

import json
import re

from chalicelib.runs.deadline import RunInterrupted
from chalicelib.runs.schedule_map import PartInProgress
from tests.conftest import ROOT

DEFINITION = ROOT / "infra" / "statemachines" / "schedule.asl.json"
HANDLERS = ("schedule_plan", "schedule_segment", "schedule_finish")


def _definition() -> dict:
    return json.loads(DEFINITION.read_text())


def test_every_lambda_placeholder_names_a_handler_of_the_app_and_the_bucket_is_templated():
    text = DEFINITION.read_text()
    placeholders = set(re.findall(r"\$\{(\w+)\}", text))
    assert placeholders == {*HANDLERS, "bucket"}
    app = (ROOT / "app.py").read_text()
    for name in HANDLERS:
        assert f'@app.lambda_function(name="{name}")' in app


def test_the_segments_run_as_a_distributed_map_of_standard_children_over_the_plans_json_list():
    segments = _definition()["States"]["Segments"]
    assert segments["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
    reader = segments["ItemReader"]
    assert reader["Resource"] == "arn:aws:states:::s3:getObject"
    assert reader["ReaderConfig"] == {"InputType": "JSON"}
    assert reader["Parameters"] == {"Bucket": "${bucket}", "Key.$": "$.plan.segments_key"}
    assert segments["MaxConcurrencyPath"] == "$.plan.max_concurrency"


def test_a_child_out_of_time_or_overlapping_another_is_invoked_again_and_every_failure_reaches_finish():
    states = _definition()["States"]
    child = segments_child(states)
    retried = {e for r in child["Retry"] for e in r["ErrorEquals"]}
    # The error names Lambda reports are the exception classes' names.
    assert {RunInterrupted.__name__, PartInProgress.__name__, "Lambda.TooManyRequestsException"} <= retried
    assert child["Retry"][-1]["ErrorEquals"] == ["States.ALL"]
    for name, after in (("Plan", "Finish"), ("Segments", "Lift"), ("Lift", "Finish")):
        assert states[name]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": states[name]["Catch"][0]["ResultPath"], "Next": after}
        ]
    for name in ("Segments", "Lift"):
        assert states[name]["ToleratedFailurePercentage"] == 100  # one failed segment never stops the others
    assert states["Finish"]["Next"] == "Covered"
    assert states["Covered"]["Default"] == "Incomplete" and states["Incomplete"]["Type"] == "Fail"


def segments_child(states: dict) -> dict:
    processor = states["Segments"]["ItemProcessor"]
    return processor["States"][processor["StartAt"]]


def test_the_lift_map_reads_the_same_segments_once_they_are_scored_and_tells_the_child_its_phase():
    states = _definition()["States"]
    assert states["Segments"]["Next"] == "Lift" and states["Lift"]["Next"] == "Finish"
    lift = states["Lift"]
    assert lift["ItemReader"] == states["Segments"]["ItemReader"]
    assert lift["ItemSelector"] == {"phase": "lift", "item.$": "$$.Map.Item.Value"}
    assert lift["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
