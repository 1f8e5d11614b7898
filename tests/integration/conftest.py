"""Handlers under moto: fresh AWS per test, resources from bootstrap, events like Lambda gets them."""

from __future__ import annotations

import gzip
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import numpy as np
import pytest
from botocore.config import Config
from chalice.test import Client
from moto import mock_aws

from chalicelib import runtime
from chalicelib.aws.bucket import BehaviourBucket
from chalicelib.aws.ledger import LEDGER_KEY_PREFIX
from chalicelib.aws.queues import RetentionQueues
from chalicelib.aws.tables import BehaviourTables
from chalicelib.observability import logger
from chalicelib.retry import MAX_ATTEMPTS, Backoff
from chalicelib.runs.pipeline import ScoringPipeline
from chalicelib.scoring.artifact import MODEL_CACHE
from chalicelib.scoring.events import EventBatch
from chalicelib.scoring.scorer import Scorer
from chalicelib.scoring.state import StateBatch, build_state
from chalicelib.settings import Settings
from churnguard_offline.bootstrap import ensure_resources
from churnguard_offline.generate import generate_events, write_event_log
from churnguard_offline.lambda_events import s3_object_created, stage_timeout
from tests.conftest import ROOT
from tests.strict_aws import IamPolicy, StrictAws, strict_aws

# Keys of the runs' own items in the state table (leases, the ledger): no user id holds a control character.
RUNS_OWN_KEY_MARK = "\x1f"
STAGE = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"]
STAGE_ENV = STAGE["environment_variables"]
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def population() -> EventBatch:
    """A year of behaviour of 400 synthetic users, ending at AS_OF."""
    return generate_events(400, 365, 5, AS_OF)


def csv_bytes(batch: EventBatch, tmp_path, extra: str = "", gz: bool = False) -> bytes:
    """Return an event log as CSV bytes (optionally gzip), with extra raw lines appended."""
    path = tmp_path / "events.csv"
    write_event_log(batch, path)
    data = path.read_bytes() + extra.encode()
    return gzip.compress(data, mtime=0) if gz else data


class Aws:
    """The embedded AWS of one test, with helpers to land files and look at what landed."""

    def __init__(self, settings: Settings, strict: StrictAws | None = None) -> None:
        self.settings = settings
        self.strict = strict  # the strict-AWS layer this AWS answers through (what it refused: strict.refused)
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        self.ddb = boto3.resource("dynamodb")

    def land(self, key: str, data: bytes, event_time: float | None = None) -> dict[str, Any]:
        """Put an object and return the S3 notification Lambda would get for it."""
        resp = self.s3.put_object(Bucket=self.settings.behaviour_bucket, Key=key, Body=data)
        return s3_object_created(
            self.settings.behaviour_bucket,
            key,
            etag=resp["ETag"].strip('"'),
            size=len(data),
            event_time=AS_OF.timestamp() if event_time is None else event_time,
            version_id=resp.get("VersionId"),
        )

    def items(self, table: str, runs_own: bool = False) -> list[dict[str, Any]]:
        """Return a table's user items; with `runs_own`, the runs' own items too (leases, the ledger)."""
        t = self.ddb.Table(table)
        resp = t.scan()
        items = resp["Items"]
        while "LastEvaluatedKey" in resp:
            resp = t.scan(ExclusiveStartKey=resp["LastEvaluatedKey"])
            items += resp["Items"]
        return items if runs_own else [i for i in items if not i["user_id"].startswith(RUNS_OWN_KEY_MARK)]

    def ledger(self) -> list[dict[str, Any]]:
        """Return the ledger's records (items of the state table), in their items' key order."""
        items = sorted(self.items(self.settings.state_table, runs_own=True), key=lambda i: i["user_id"])
        return [json.loads(i["ledger_record"]) for i in items if i["user_id"].startswith(LEDGER_KEY_PREFIX)]

    def forget_ledger(self) -> None:
        """Delete every ledger record, as TTL would once they expired."""
        table = self.ddb.Table(self.settings.state_table)
        for item in self.items(self.settings.state_table, runs_own=True):
            if item["user_id"].startswith(LEDGER_KEY_PREFIX):
                table.delete_item(Key={"user_id": item["user_id"]})

    def drain(self, tier: str) -> list[dict[str, Any]]:
        """Receive every message of a tier's queue (body parsed, attributes flattened)."""
        url = self.sqs.get_queue_url(QueueName=self.settings.queues[tier])["QueueUrl"]
        out = []
        while True:
            resp = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
            msgs = resp.get("Messages", [])
            if not msgs:
                return out
            for m in msgs:
                attrs = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
                out.append({"body": json.loads(m["Body"]), "attributes": attrs})
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def drain_all(self) -> list[dict[str, Any]]:
        """Receive every message of every queue; return the bodies."""
        return [m["body"] for destination in self.settings.queues for m in self.drain(destination)]

    def keys(self, prefix: str) -> list[str]:
        resp = self.s3.list_objects_v2(Bucket=self.settings.behaviour_bucket, Prefix=prefix)
        return [o["Key"] for o in resp.get("Contents", [])]

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.settings.behaviour_bucket, Key=key)["Body"].read()


@pytest.fixture
def stage_env(monkeypatch) -> dict[str, str]:
    env = dict(STAGE_ENV)
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        SWEEP_MIN_AGE_SECONDS="0",
        LOG_LEVEL="WARNING",
    )
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("MODEL_DIR", raising=False)
    return env


# The attributes every log record has; the rest of a record's attributes are the `extra` keys of its call.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class _Warnings(logging.Handler):
    """Keeps (message, extra keys) of each warning logged."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.logged: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING:
            extra = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
            self.logged.append((record.getMessage(), extra))


@contextmanager
def service_log(handler: logging.Handler) -> Iterator[None]:
    """Send the service logger's records at the handler's level or above to `handler`, for the block's length.

    Chalice names its logger after the app ("churnguard", the Powertools service too) and sets its level when
    app.py is first imported, so what reaches a handler would depend on test order; the level is set here.
    """
    target = logging.getLogger(logger.name)
    level = target.level
    target.addHandler(handler)
    target.setLevel(handler.level)
    try:
        yield
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


@pytest.fixture
def warnings_logged() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The structured warnings the pipeline logs during the test: (message, extra keys) each."""
    handler = _Warnings()
    with service_log(handler):
        yield handler.logged


@contextmanager
def strict_moto() -> Iterator[StrictAws]:
    """moto behind the strict-AWS layer, under the dev stage's own IAM policy (tests/strict_aws.py)."""
    with mock_aws(), strict_aws(IamPolicy.of_stage(ROOT)) as layer:
        yield layer


@pytest.fixture
def aws(stage_env) -> Aws:
    with strict_moto() as layer:
        runtime.clear()
        settings = Settings.from_env()
        ensure_resources(settings)
        yield Aws(settings, layer)
    runtime.clear()


@pytest.fixture
def client(aws) -> Client:
    from app import app

    with stage_timeout(STAGE["lambda_timeout"]), Client(app, stage_name="dev", project_dir=str(ROOT)) as c:
        yield c


def gz_truncated(data: bytes) -> bytes:
    """Return a gzip stream cut in half (a corrupt upload)."""
    packed = gzip.compress(data)
    return packed[: len(packed) // 2]


def gz_bytes(text: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as fh:
        fh.write(text.encode())
    return buf.getvalue()


# The clients of a pipeline built for a test use botocore's "standard" retry mode: the same retries and
# error classes as the deployed "adaptive" mode, without its client-side rate limiter, which would slow
# a throttled test to a crawl.
STANDARD = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS}, max_pool_connections=32)


@pytest.fixture
def no_sleep(monkeypatch):
    """No backoff sleeps: ours by the settings (handlers) or by the pipeline's backoff, botocore's patched out."""
    monkeypatch.setenv("RETRY_BASE_DELAY_SECONDS", "0")
    # botocore's own wait before a retry
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=lambda _s: None))


@pytest.fixture
def small(population):
    """About two hundred users, in chunks of fifty, so a run has several checkpoints."""
    return population.select(population.user_index < 200)


@pytest.fixture
def chunks_of_fifty(aws, monkeypatch):
    """Runs work in chunks of fifty users: pipelines built from `aws.settings` after it (request it first), and
    handlers by the environment."""
    monkeypatch.setenv("CHUNK_USERS", "50")
    aws.settings = replace(aws.settings, chunk_users=50)


def make_pipeline(settings) -> ScoringPipeline:
    """A pipeline with its own clients, like one Lambda container; it never sleeps before a retry."""
    backoff = Backoff(settings.retry_base_delay_seconds, settings.retry_max_delay_seconds, sleep=lambda _s: None)
    return ScoringPipeline(
        settings=settings,
        bucket=BehaviourBucket(boto3.client("s3", config=STANDARD), settings.behaviour_bucket),
        tables=BehaviourTables(
            boto3.resource("dynamodb", config=STANDARD),
            settings.state_table,
            settings.risk_table,
            settings.write_concurrency,
            settings.retention_seconds,
            backoff,
        ),
        queues=RetentionQueues(boto3.client("sqs", config=STANDARD), settings.queues, backoff),
        scorer=Scorer(MODEL_CACHE.get()),
        backoff=backoff,
    )


def assert_every_user_once_and_every_message_once(aws, batch, summaries=()):
    """State equals the offline build of `batch`; one risk item per user, scored from its stored state; no dupes."""
    states = {i["user_id"]: i for i in aws.items(aws.settings.state_table)}
    risks = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    expected = build_state(batch)
    assert set(states) == set(risks) == set(expected.user_ids)
    stored = StateBatch.from_blobs(expected.user_ids, [bytes(states[u]["state"].value) for u in expected.user_ids])
    np.testing.assert_allclose(stored.values, expected.values, rtol=1e-12)  # counts exact: nothing merged twice
    for uid, risk in risks.items():
        assert risk["scored_state_version"] == states[uid]["state_version"]
    bodies = aws.drain_all()
    ids = Counter(b["message_id"] for b in bodies)
    assert bodies and ids.most_common(1)[0][1] == 1
    claimed = {r["contact_message_id"] for r in risks.values() if "contact_message_id" in r}
    # one run leaves a claim per message; several runs may each have messaged a user, the last claim stays
    assert set(ids) == claimed if len(summaries) <= 1 else claimed <= set(ids)
    assert all(r["contact_status"] == "sent" for r in risks.values() if "contact_message_id" in r)
    for summary in summaries:
        assert summary["status"] in ("succeeded", "replayed")
    return bodies
