"""The kill-point sweep: a run dies before one of its AWS calls, the event comes again, and it ends as a clean run.

For a file run and for the schedule, the calls of a clean run are recorded by kind (operation and the S3 prefix,
table or queue it touches); each case kills a fresh attempt before one of them, redelivers the event in a fresh
container, and compares what is left with the clean run's: the data (state, risk, every message once), the run
record, the ledger, the closed exposures, the lift report, and no checkpoint or dead letter left behind.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from typing import Any

import boto3
import pytest
from moto.core.models import BackendDict

from chalicelib.aws.leases import LEASE_KEY_PREFIX
from chalicelib.scoring.events import SECONDS_PER_DAY
from churnguard_offline.bootstrap import ensure_resources
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline
from tests.integration.test_faults import Crash

T0 = AS_OF.timestamp()
FILE_KEY = "incoming/a.csv"
# The schedule comes when every cooldown of the file run's exposures is over: it re-exposes users, closing exposures.
SCHEDULE_AT = T0 + 40 * SECONDS_PER_DAY
# What differs between any two attempts of the same run: when it ran and where the redo resumed.
# (risk_writes_skipped too: a redo finds the risk items a killed attempt wrote, unchanged, and skips them)
ATTEMPT_FIELDS = ("duration_s", "finished_at", "resumed_after_chunks", "risk_writes_skipped")
# And after a death in the middle of a chunk, what the redo of that chunk counts differently: users it finds merged
# already are not new, messages it finds sent already are suppressed as duplicates, not sent (or retried) again.
REDONE_CHUNK_FIELDS = (
    "users_new",
    "suppressed",
    "messages_sent",
    "messages_claimed",
    "messages_by_channel",
    "messages_by_channel_action",
    "delivery",
)
# A risk item's times, and its version, which counts writes: a redone chunk writes the same item once more.
RISK_TIMES = ("scored_at", "contact_claimed_at", "risk_version")


def kind(params: dict[str, Any], service: str) -> str:
    """Name the store a call touches: an S3 prefix, a table or a queue."""
    if service == "s3":
        return params.get("Key", params.get("Prefix", "")).split("/")[0]
    if "TableName" in params:
        # A run's own items in the state table (its lease, the ledger) are stores of their own.
        user = (params.get("Item") or params.get("Key") or {}).get("user_id", "")
        user = user.get("S", "") if isinstance(user, dict) else user
        special = user.split("\x1f")[1] if user.startswith("\x1f") else ""
        return f"{params['TableName']}:{special}" if special else params["TableName"]
    if "RequestItems" in params:
        return ",".join(sorted(params["RequestItems"]))
    return params.get("QueueUrl", "").rsplit("/", 1)[-1]


class KillSwitch:
    """Counts every AWS call of a pipeline by (service, operation, store); kills the process before a chosen one.

    Once killed, every later call of that pipeline fails too: a dead process makes no more calls, even from the
    write threads already running.
    """

    def __init__(self, target: tuple[str, str, str, int] | None = None) -> None:
        self.target = target
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self.order: list[tuple[str, str, str]] = []
        self.dead = False

    def attach(self, pipeline) -> None:
        for client in (pipeline.bucket.client, pipeline.tables.client, pipeline.queues.client):
            client.meta.events.register_first("provide-client-params", self.hook)

    def hook(self, params, event_name, **_) -> None:
        _, service, op = event_name.split(".")
        call = (service, op, kind(params, service))
        if self.dead:
            raise Crash(f"already dead before {call}")
        self.seen[call] += 1
        self.order.append(call)
        if self.target is not None and (*call, self.seen[call]) == self.target:
            self.dead = True
            raise Crash(f"killed before {call} #{self.seen[call]}")


def kill_points(calls: list[tuple[str, str, str]]) -> list[tuple[str, str, str, int]]:
    """Return where to kill a run: before every S3 call (the bookkeeping), and before the first call of each kind
    of DynamoDB and SQS call (the data; test_faults.py kills file runs at more of those, deeper in a run)."""
    counts: Counter[tuple[str, str, str]] = Counter()
    points: list[tuple[str, str, str, int]] = []
    for call in calls:
        counts[call] += 1
        if call[0] == "s3" or counts[call] == 1:
            points.append((*call, counts[call]))
    return points


def outcome(aws, run_id: str, redone_chunk: bool = False) -> dict[str, Any]:
    """Return what a finished run leaves behind, without times and without how each attempt got there."""
    record = json.loads(aws.get(f"runs/{run_id}.json"))
    record.get("object", {}).pop("version_id", None)  # each landing of the file in a fresh bucket is a new version
    for name in ATTEMPT_FIELDS + (REDONE_CHUNK_FIELDS if redone_chunk else ()):
        record.pop(name, None)
    for attempt in record.get("attempts", []):  # each finished attempt, as the record lists them
        for name in ATTEMPT_FIELDS + (REDONE_CHUNK_FIELDS if redone_chunk else ()):
            attempt.pop(name, None)
    # Closed exposures in files or archived: a file the archive holds is deleted, so each is kept once
    kept = [key for prefix in ("outcomes/closed/", "outcomes/archive/") for key in aws.keys(prefix)]
    closed = [e for key in kept for e in json.loads(aws.get(key))]
    risks = sorted(aws.items(aws.settings.risk_table), key=lambda i: i["user_id"])
    return {
        "record": record,
        "ledger": sorted(aws.ledger(), key=lambda record: json.dumps(record, sort_keys=True)),
        "closed": sorted((e["user_id"], e["exposed_at"], e["group"], str(e.get("returned_at"))) for e in closed),
        "lift": json.loads(aws.get("reports/lift.json")) if aws.keys("reports/") else None,
        "risks": [{k: v for k, v in item.items() if k not in RISK_TIMES} for item in risks],
        "states": sorted((i["user_id"], i["state_version"]) for i in aws.items(aws.settings.state_table)),
        # (a death between SQS taking a batch and its mark sends that batch again, under the same ids)
        "messages": sorted({b["message_id"] for b in aws.drain_all()}),
        "left": aws.keys("checkpoints/") + aws.keys("dead-letter/"),
    }


def outcome_of(expected: dict[str, Any], redone_chunk: bool) -> dict[str, Any]:
    """Return a clean run's outcome as `outcome` gives it after a death in the middle of a chunk (or not)."""
    drop = REDONE_CHUNK_FIELDS if redone_chunk else ()
    record = {k: v for k, v in expected["record"].items() if k not in drop}
    if "attempts" in record:
        record["attempts"] = [{k: v for k, v in a.items() if k not in drop} for a in record["attempts"]]
    return {**expected, "record": record}


def difference(got: dict[str, Any], want: dict[str, Any], part: str) -> str:
    """Describe the first difference in one part of two outcomes."""
    a, b = got[part], want[part]
    if isinstance(a, list) and len(a) == len(b):
        a, b = next((x, y) for x, y in zip(a, b, strict=True) if x != y)
    if isinstance(a, dict) and isinstance(b, dict):
        return str({k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)})
    return f"{a!r} != {b!r}"


def position(calls: list[tuple[str, str, str]], point: tuple[str, str, str, int]) -> int:
    """Return the index in `calls` of the call a kill point names."""
    seen = 0
    for i, call in enumerate(calls):
        seen += call == point[:3]
        if seen == point[3]:
            return i
    raise AssertionError(f"{point} is not a call of the run")


def reset(aws) -> None:
    """Start again from an empty embedded AWS with the app's resources."""
    BackendDict.reset()  # what entering mock_aws() does, without a new mock
    ensure_resources(aws.settings)


def file_run(aws, batch, tmp_path, switch: KillSwitch) -> str:
    """Land the file and process it with `switch` attached; return the run id (None when the run was killed)."""
    aws.land(FILE_KEY, csv_bytes(batch, tmp_path))
    pipeline = make_pipeline(aws.settings)
    switch.attach(pipeline)
    return pipeline.process_object(FILE_KEY, None, T0)["run_id"]


def schedule_run(aws, batch, tmp_path, switch: KillSwitch) -> str:
    """Score the file cleanly, then run the schedule with `switch` attached; return the schedule's run id."""
    file_run(aws, batch, tmp_path, KillSwitch())
    aws.drain_all()
    pipeline = make_pipeline(aws.settings)
    switch.attach(pipeline)
    return pipeline.run_schedule(SCHEDULE_AT)["run_id"]


def lease_runs_out(aws) -> None:
    """Let the killed attempt's lease run out, as it has (its invocation's end plus a margin) by the redelivery."""
    table = boto3.resource("dynamodb").Table(aws.settings.state_table)
    for item in aws.items(aws.settings.state_table, runs_own=True):
        if item["user_id"].startswith(LEASE_KEY_PREFIX):
            table.delete_item(Key={"user_id": item["user_id"]})


def redeliver(aws, scenario) -> str:
    """Deliver the event again in a fresh container, once the killed attempt's lease ran out; return the run id."""
    lease_runs_out(aws)
    pipeline = make_pipeline(aws.settings)
    if scenario is file_run:
        return pipeline.process_object(FILE_KEY, None, T0)["run_id"]
    return pipeline.run_schedule(SCHEDULE_AT)["run_id"]


def sweep(aws, batch, tmp_path, scenario) -> None:
    """Kill `scenario` at each of its kill points in turn, redeliver, and compare with its clean run."""
    clean = KillSwitch()
    run_id = scenario(aws, batch, tmp_path, clean)
    expected = outcome(aws, run_id)
    assert expected["messages"] and expected["left"] == []
    assert expected["closed"] or scenario is file_run
    calls = clean.order
    # the schedule archives what it closed (and is killed before each of those calls too)
    assert (("s3", "DeleteObject", "outcomes") in calls) == (scenario is not file_run)
    # Kills after the last chunk's checkpoint are in the bookkeeping: the redo must write the very record.
    last_chunk = max(i for i, call in enumerate(calls) if call == ("s3", "PutObject", "checkpoints"))
    failures = []
    for point in kill_points(calls):
        reset(aws)
        with pytest.raises(Crash):
            scenario(aws, batch, tmp_path, KillSwitch(point))
        redeliver(aws, scenario)
        redone = position(calls, point) <= last_chunk
        got, want = outcome(aws, run_id, redone), outcome_of(expected, redone)
        wrong = sorted(part for part in want if got[part] != want[part])
        if wrong:
            failures.append(f"killed before {point}: {', '.join(wrong)} differ: {difference(got, want, wrong[0])}")
    assert failures == []


@pytest.fixture
def small_world(aws, no_sleep, population):
    """Fifteen users in chunks of five: three chunks (or pages), two checkpoints."""
    aws.settings = replace(aws.settings, chunk_users=5)
    return population.select(population.user_index < 15)


def test_a_file_run_killed_at_any_call_and_redelivered_ends_as_a_clean_run(aws, small_world, tmp_path):
    sweep(aws, small_world, tmp_path, file_run)


def test_a_schedule_killed_at_any_call_and_redelivered_ends_as_a_clean_run(aws, small_world, tmp_path):
    sweep(aws, small_world, tmp_path, schedule_run)
