"""The backfill state machine's definition names the app's own workers and retries what they ask it to."""

from __future__ import annotations

import json
import re

from tests.conftest import ROOT

ASL = ROOT / "infra" / "statemachines" / "backfill.asl.json"
WORKERS = {"backfill_split", "backfill_range", "backfill_shard", "backfill_finish"}


def _tasks(states: dict) -> dict:
    """Return every Task state, those inside the maps' processors too, by name."""
    found = {}
    for name, state in states.items():
        if state["Type"] == "Task":
            found[name] = state
        elif state["Type"] == "Map":
            found.update(_tasks(state["ItemProcessor"]["States"]))
    return found


def test_every_task_invokes_one_of_the_apps_backfill_handlers_by_placeholder():
    definition = json.loads(ASL.read_text())
    tasks = _tasks(definition["States"])
    names = {t["Parameters"]["FunctionName"] for t in tasks.values()}
    assert names == {f"${{{w}}}" for w in WORKERS}
    app = (ROOT / "app.py").read_text()
    assert set(re.findall(r'@app\.lambda_function\(name="(backfill_[a-z]+)"\)', app)) == WORKERS


def test_the_maps_are_distributed_read_their_item_lists_from_s3_and_tolerate_failed_children():
    states = json.loads(ASL.read_text())["States"]
    for name in ("Ranges", "Shards"):
        m = states[name]
        assert m["ItemProcessor"]["ProcessorConfig"] == {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}
        assert m["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
        assert m["ItemReader"]["ReaderConfig"] == {"InputType": "JSON"}
        assert m["ItemReader"]["Parameters"]["Bucket"] == "${bucket}"
        assert m["ToleratedFailurePercentage"] == 100 and m["MaxConcurrency"] >= 1
        assert m["ResultPath"] is None  # the children's results stay in S3, not in the 256 KiB state
        assert m["Catch"][0]["Next"] == "Finish" and m["Next"] in ("Shards", "Finish")
    assert states["Split"]["Catch"][0]["Next"] == "Finish" and states["Finish"]["End"]


def test_a_shard_out_of_time_or_busy_is_invoked_again_by_the_state_machine():
    shard = json.loads(ASL.read_text())["States"]["Shards"]["ItemProcessor"]["States"]["Shard"]
    retried = {e for r in shard["Retry"] for e in r["ErrorEquals"]}
    assert {"RunInterrupted", "ShardBusy", "RangeNotReady", "Lambda.TooManyRequestsException"} <= retried
