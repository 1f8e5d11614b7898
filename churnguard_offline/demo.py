"""`python -m chalicelib demo`: the whole event path on an embedded AWS (moto, in-process).

Creates the resources, lands behaviour files in S3, lets the real S3-triggered handler score
them (through chalice.test.Client), redelivers one event, leaves one file without a trigger for the
schedule to sweep up, runs the scheduled handler a week later, and prints what landed.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.aws.bucket import RESCORE_MARK_KEY
from chalicelib.scoring.events import SECONDS_PER_DAY, EventBatch
from chalicelib.scoring.scorer import iso_time
from churnguard_offline.lambda_events import s3_object_created, scheduled, stage_timeout

ROOT = Path(__file__).resolve().parent.parent
# Where the demo leaves the latest run report (reports/latest.html in the embedded bucket) to open in a browser.
DEMO_REPORT = ROOT / "build" / "demo-report.html"
BAD_ROWS = (
    ",2026-01-01T00:00:00Z,login,",
    "u-bad-time,yesterday,login,",
    "u-bad-value,2026-01-01T00:00:00Z,purchase,12.x",
)


def _stage_config() -> dict[str, Any]:
    return json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]


def _stage_environment() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = {**config.get("environment_variables", {}), **_stage_config()["environment_variables"]}
    for key, value in env.items():
        os.environ.setdefault(key, value)
    # An embedded AWS needs a region and some credentials, never real ones; the run summaries are
    # printed below, so the JSON log lines are kept to warnings.
    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="demo",
        AWS_SECRET_ACCESS_KEY="demo",
        SWEEP_MIN_AGE_SECONDS="0",
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)


def _csv_gz(batch: EventBatch, extra_rows: tuple[str, ...] = ()) -> bytes:
    """Return an event log as gzip CSV bytes, with extra raw rows appended."""
    from churnguard_offline.generate import write_event_log

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        write_event_log(batch, path)
        data = path.read_bytes() + "".join(row + "\n" for row in extra_rows).encode()
    return gzip.compress(data, mtime=0)


def _print(title: str, body: Any = None) -> None:
    print(f"\n== {title}")
    if body is not None:
        print(body if isinstance(body, str) else json.dumps(body, indent=2, default=str, ensure_ascii=False))


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "run_id",
        "status",
        "source",
        "mode",
        "as_of",
        "rows",
        "rejected_file",
        "users_scored",
        "users_new",
        "risk_tier",
        "value_tier",
        "messages_sent",
        "messages_by_channel",
        "suppressed",
        "swept_files",
        "delivery",
        "model_version",
        "duration_s",
    )
    return {k: summary[k] for k in keep if k in summary}


def _table(counts: dict[str, int]) -> str:
    tiers = ("high", "medium", "low")
    lines = ["risk \\ value    high  medium     low   total"]
    for risk in tiers:
        row = [counts.get(f"{risk}/{value}", 0) for value in tiers]
        lines.append(f"{risk:<12}" + "".join(f"{n:>8}" for n in row) + f"{sum(row):>8}")
    return "\n".join(lines)


@dataclass
class _Stage:
    """What the demo's steps drive: the app's test client, the embedded S3, the settings and the demo clock."""

    client: Any
    s3: Any
    settings: Any
    now: datetime
    t_end: float  # the midnight (UTC) that ends the generated history


def run_demo(users: int = 1500, seed: int = 11, report_out: Path = DEMO_REPORT) -> Path:
    """Run the demo, print what landed in DynamoDB and each queue, write the run report to `report_out` and
    return its path."""
    _stage_environment()
    import boto3
    from chalice.test import Client
    from moto import mock_aws

    from chalicelib import runtime
    from chalicelib.observability import logger
    from chalicelib.settings import Settings
    from churnguard_offline.bootstrap import ensure_resources
    from churnguard_offline.generate import generate_events

    logger.setLevel(os.environ.get("DEMO_LOG_LEVEL", "WARNING"))
    sys.path.insert(0, str(ROOT))
    from app import app

    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    t_end = today.timestamp()
    events = generate_events(users, 365, seed, today)
    backfill, day_one, day_two = _split_days(events, t_end)
    print(f"ChurnGuard demo: {len(events)} synthetic events of {users} users over 365 days to {iso_time(t_end)}")

    with mock_aws():
        runtime.clear()
        settings = Settings.from_env()
        ensure_resources(settings)
        s3 = boto3.client("s3")
        _print_resources(settings)
        timeout = _stage_config()["lambda_timeout"]
        with stage_timeout(timeout), Client(app, stage_name="dev", project_dir=str(ROOT)) as client:
            stage = _Stage(client=client, s3=s3, settings=settings, now=now, t_end=t_end)
            _triggered_runs(stage, backfill, day_one)
            _scheduled_runs(stage, day_two)
        _show_landed(settings, s3)
        _save_report(settings, s3, report_out)
    runtime.clear()
    return report_out


def _split_days(events: EventBatch, t_end: float) -> tuple[EventBatch, EventBatch, EventBatch]:
    """Return (the history up to two days before `t_end`, the day after it, the last day)."""
    backfill = events.select(events.time <= t_end - 2 * SECONDS_PER_DAY)
    day_one = events.select((events.time > t_end - 2 * SECONDS_PER_DAY) & (events.time <= t_end - SECONDS_PER_DAY))
    day_two = events.select(events.time > t_end - SECONDS_PER_DAY)
    return backfill, day_one, day_two


def _print_resources(settings: Any) -> None:
    """Print the bucket, tables and queues the demo created."""
    _print(
        "resources",
        {
            "bucket": settings.behaviour_bucket,
            "tables": [settings.state_table, settings.risk_table],
            "queues": settings.queues,
        },
    )


def _land(stage: _Stage, key: str, data: bytes) -> dict[str, Any]:
    """Put a file into the behaviour bucket and return the S3 event that announces it."""
    bucket = stage.settings.behaviour_bucket
    resp = stage.s3.put_object(Bucket=bucket, Key=key, Body=data)
    return s3_object_created(
        bucket,
        key,
        etag=resp["ETag"].strip('"'),
        size=len(data),
        event_time=stage.now.timestamp(),
        version_id=resp.get("VersionId"),
    )


def _triggered_runs(stage: _Stage, backfill: EventBatch, day_one: EventBatch) -> None:
    """Land the backfill and a day's delta with bad rows, redeliver the delta's event, and print each run."""
    prefix = stage.settings.incoming_prefix
    first = _land(stage, f"{prefix}backfill/history.csv.gz", _csv_gz(backfill))
    result = stage.client.lambda_.invoke("on_behaviour_file", first).payload
    _print("S3 trigger: backfill of a year", _brief(result[0]))

    delta_key = f"{prefix}daily/{iso_time(stage.t_end - SECONDS_PER_DAY)[:10]}.csv.gz"
    second = _land(stage, delta_key, _csv_gz(day_one, BAD_ROWS))
    result = stage.client.lambda_.invoke("on_behaviour_file", second).payload
    _print("S3 trigger: a day's delta with three bad rows", _brief(result[0]))

    result = stage.client.lambda_.invoke("on_behaviour_file", second).payload
    _print("S3 trigger: the same event delivered again", _brief(result[0]))


def _scheduled_runs(stage: _Stage, day_two: EventBatch) -> None:
    """Run the schedule an hour later, then a week later after a file lands without a trigger; print each run."""
    result = stage.client.lambda_.invoke("scheduled_scoring", scheduled(stage.now.timestamp() + 3600)).payload
    _print(
        "schedule, an hour later (inside every cooldown): nobody contacted above is contacted again",
        _brief(result),
    )

    stage.s3.put_object(
        Bucket=stage.settings.behaviour_bucket,
        Key=f"{stage.settings.incoming_prefix}daily/{iso_time(stage.t_end)[:10]}.csv.gz",
        Body=_csv_gz(day_two),
    )
    week_later = stage.t_end + 7 * SECONDS_PER_DAY
    result = stage.client.lambda_.invoke("scheduled_scoring", scheduled(week_later)).payload
    _print("schedule, a week later: sweeps the file whose trigger never came, re-scores everyone", _brief(result))
    _print("risk tier x value tier (users, scheduled run)", _table(result.get("risk_x_value", {})))


def _show_landed(settings: Any, s3: Any) -> None:
    import boto3

    table = boto3.resource("dynamodb").Table(settings.risk_table)
    items = table.scan(Limit=200)["Items"]
    item = next((i for i in items if i.get("risk_tier") == "high" and i.get("action")), items[0] if items else None)
    _print(f"one DynamoDB item ({settings.risk_table})", item)
    sqs = boto3.client("sqs")
    for name in settings.queues.values():
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, MessageAttributeNames=["All"])
        body = json.loads(msgs["Messages"][0]["Body"]) if msgs.get("Messages") else None
        attrs = (
            {k: v["StringValue"] for k, v in msgs["Messages"][0].get("MessageAttributes", {}).items()} if body else {}
        )
        _print(
            f"queue {name}: {depth['Attributes']['ApproximateNumberOfMessages']} messages; one of them",
            {"attributes": attrs, "body": body},
        )
    listed = s3.list_objects_v2(Bucket=settings.behaviour_bucket, Prefix="runs/").get("Contents", [])
    runs = sum(o["Key"] != RESCORE_MARK_KEY for o in listed)  # the re-score mark sits beside the run records
    rejected = [
        o["Key"] for o in s3.list_objects_v2(Bucket=settings.behaviour_bucket, Prefix="rejected/").get("Contents", [])
    ]
    _print("bucket", {"run summaries": runs, "rejected-row files": rejected})
    if rejected:
        print(s3.get_object(Bucket=settings.behaviour_bucket, Key=rejected[0])["Body"].read().decode())
    lift = json.loads(s3.get_object(Bucket=settings.behaviour_bucket, Key="reports/lift.json")["Body"].read())
    _print(
        "lift report (reports/lift.json; outcomes resolve once the 30-day horizon has passed)",
        {"as_of": lift["as_of"], "all users": lift["rows"][0] if lift["rows"] else None},
    )


def _save_report(settings: Any, s3: Any, out: Path) -> None:
    """Copy the latest run report out of the embedded bucket to `out` and print where it is."""
    page = s3.get_object(Bucket=settings.behaviour_bucket, Key="reports/latest.html")["Body"].read()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(page)
    _print("run report (reports/latest.html in the bucket); open it in a browser", str(out))
