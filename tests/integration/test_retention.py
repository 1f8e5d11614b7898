"""Retention on moto: every state and risk item expires RETENTION_DAYS after the user's latest event.

The runs go through the container's pipeline (what the handlers call), not chalice's test client: the
client sets the stage's STATE_TABLE while it invokes, and these tests also run with one shared table.

moto keeps TTL settings but never deletes an expired item, which is what a real table looks like in the
days before TTL gets to it: the tests check the `expires_at` values and that the schedule leaves users
whose expiry passed alone.
"""

from __future__ import annotations

import math

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import runtime
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.scorer import iso_time
from chalicelib.scoring.state import build_state, col
from churnguard_offline.bootstrap import ensure_resources
from tests.integration.conftest import AS_OF, csv_bytes

T = AS_OF.timestamp()
RETENTION = 365 * 86400


@pytest.fixture(params=["separate_tables", "shared_table"])
def stage_env(request, stage_env, monkeypatch):
    """The stage with a one-year retention; STATE_TABLE apart from RISK_TABLE, or the same table."""
    monkeypatch.setenv("RETENTION_DAYS", "365")
    if request.param == "shared_table":
        monkeypatch.setenv("STATE_TABLE", stage_env["RISK_TABLE"])
    return stage_env


def _land(aws, key: str, data: bytes, at: float = T) -> dict:
    """Put a behaviour file landing at `at` and run what its S3 trigger runs; return the run summary."""
    aws.land(key, data, at)
    return runtime.get_pipeline().process_object(key, None, at)


def _rows(*rows: tuple[str, float, str]) -> bytes:
    """Return a behaviour file of (user, epoch time, event type) rows."""
    lines = ["user_id,event_time,event_type,value"] + [f"{u},{iso_time(t)},{e}," for u, t, e in rows]
    return ("\n".join(lines) + "\n").encode()


def _expiries(aws) -> tuple[dict[str, int], dict[str, int]]:
    """Return user -> `expires_at` of the state items and of the risk items."""
    states = {i["user_id"]: int(i["expires_at"]) for i in aws.items(aws.settings.state_table) if "state" in i}
    risks = {i["user_id"]: int(i["expires_at"]) for i in aws.items(aws.settings.risk_table) if "as_of" in i}
    return states, risks


def test_state_and_risk_items_expire_one_retention_after_the_users_latest_event(aws, population, tmp_path):
    # GIVEN sixty users' year of behaviour landing as one file
    few = population.select(population.user_index < 60)

    # WHEN the S3 trigger scores it
    summary = _land(aws, "incoming/a.csv", csv_bytes(few, tmp_path))

    # THEN each user's state item and risk item expire RETENTION_DAYS after their latest event, in epoch seconds
    latest = build_state(few).values[:, col("last_seen")]
    expected = {uid: math.floor(t) + RETENTION for uid, t in zip(few.user_ids, latest)}  # the file keeps seconds
    states, risks = _expiries(aws)
    assert summary["status"] == "succeeded"
    assert states == risks == expected
    # AND the attribute is what TTL reads: a Number holding whole seconds
    raw = boto3.client("dynamodb").scan(TableName=aws.settings.risk_table)["Items"]
    assert all(i["expires_at"]["N"].isdigit() for i in raw)


def test_a_later_file_moves_the_expiry_forward_and_a_late_file_with_older_events_does_not_move_it_back(aws):
    # GIVEN two users last seen ten days ago
    first = _rows(("u1", T - 10 * SECONDS_PER_DAY, "login"), ("u2", T - 10 * SECONDS_PER_DAY, "login"))
    _land(aws, "incoming/1.csv", first, T - 10 * SECONDS_PER_DAY)

    # WHEN a file brings a newer event of u1
    newer = _rows(("u1", T - 2 * SECONDS_PER_DAY, "purchase"))
    _land(aws, "incoming/2.csv", newer, T - 2 * SECONDS_PER_DAY)

    # THEN u1's items expire one retention after that event, and u2's are unchanged
    moved = {"u1": int(T - 2 * SECONDS_PER_DAY) + RETENTION, "u2": int(T - 10 * SECONDS_PER_DAY) + RETENTION}
    assert _expiries(aws) == (moved, moved)

    # WHEN a late file brings an older event of u1
    older = _rows(("u1", T - 20 * SECONDS_PER_DAY, "session"))
    late = _land(aws, "incoming/0.csv", older, T - SECONDS_PER_DAY)

    # THEN the event is merged, and the expiry stays where the latest event put it
    assert late["status"] == "succeeded"
    u1 = next(i for i in aws.items(aws.settings.state_table) if i["user_id"] == "u1")
    assert u1["events"] == 3
    assert _expiries(aws) == (moved, moved)


def test_the_schedule_skips_and_counts_users_whose_expiry_passed(aws):
    # GIVEN users scored from their files: two scored a year ago and silent since, for longer than the
    # retention by the schedule's time; one whose expiry is exactly the schedule's time; one active last week
    at = T + SECONDS_PER_DAY
    then = T - 370 * SECONDS_PER_DAY
    old = _rows(("gone-1", T - 400 * SECONDS_PER_DAY, "login"), ("gone-2", T - 380 * SECONDS_PER_DAY, "purchase"))
    _land(aws, "incoming/old.csv", old, then)
    recent = _rows(("edge", at - RETENTION, "login"), ("here", T - 7 * SECONDS_PER_DAY, "session"))
    _land(aws, "incoming/recent.csv", recent)
    aws.drain_all()

    # WHEN the schedule re-scores every known user a day later
    summary = runtime.get_pipeline().run_schedule(at)

    # THEN the users past their retention are neither scored nor messaged, and the summary counts them
    risks = {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}
    assert summary["expired_skipped"] == 2
    assert summary["users_scored"] == 2
    assert {u: risks[u]["as_of"] for u in ("gone-1", "gone-2")} == {"gone-1": iso_time(then), "gone-2": iso_time(then)}
    # the live ones are re-scored: written as of the schedule, or left as they were when nothing changed
    live = [risks[u]["as_of"] for u in ("edge", "here")]
    assert live.count(iso_time(at)) + summary["risk_writes_skipped"] == 2
    assert not {"gone-1", "gone-2"} & {m["user_id"] for m in aws.drain_all()}


@pytest.mark.parametrize("stage_env", ["shared_table"], indirect=True)
def test_on_a_shared_item_a_rescore_fills_a_missing_expiry_and_never_moves_one_back(aws):
    # GIVEN a shared item written before expiries existed, and one whose expiry a newer merge just moved on
    data = _rows(("old", T - 30 * SECONDS_PER_DAY, "login"), ("busy", T - 30 * SECONDS_PER_DAY, "login"))
    _land(aws, "incoming/a.csv", data)
    table = boto3.resource("dynamodb").Table(aws.settings.risk_table)
    table.update_item(Key={"user_id": "old"}, UpdateExpression="REMOVE expires_at")
    later = int(T) + RETENTION
    table.update_item(
        Key={"user_id": "busy"}, UpdateExpression="SET expires_at = :e", ExpressionAttributeValues={":e": later}
    )

    # WHEN the schedule re-scores them
    runtime.get_pipeline().run_schedule(T + SECONDS_PER_DAY)

    # THEN the old item has its expiry, and the newer one was kept
    expiry = {i["user_id"]: int(i["expires_at"]) for i in aws.items(aws.settings.risk_table)}
    assert expiry == {"old": int(T - 30 * SECONDS_PER_DAY) + RETENTION, "busy": later}


def _ttl(table: str) -> dict:
    return boto3.client("dynamodb").describe_time_to_live(TableName=table)["TimeToLiveDescription"]


@pytest.fixture
def dynamodb_ttl_rule(monkeypatch) -> None:
    """DynamoDB's rule that moto lacks, on every client made from now on: enabling TTL where it is on is refused."""
    real = boto3.client

    def check(params, **_):
        enabling = params["TimeToLiveSpecification"]["Enabled"]
        if enabling and _ttl(params["TableName"])["TimeToLiveStatus"] == "ENABLED":
            error = {"Code": "ValidationException", "Message": "TimeToLive is already enabled"}
            raise ClientError({"Error": error}, "UpdateTimeToLive")

    def client(service, *args, **kwargs):
        made = real(service, *args, **kwargs)
        if service == "dynamodb":
            made.meta.events.register("provide-client-params.dynamodb.UpdateTimeToLive", check)
        return made

    monkeypatch.setattr(boto3, "client", client)


def _set_ttl(table: str, enabled: bool, attribute: str = "expires_at") -> None:
    spec = {"Enabled": enabled, "AttributeName": attribute}
    boto3.client("dynamodb").update_time_to_live(TableName=table, TimeToLiveSpecification=spec)


def _tables(aws) -> set[str]:
    return {aws.settings.state_table, aws.settings.risk_table}


ON = {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_bootstrap_turns_on_ttl_for_expires_at_on_each_table(aws):
    # GIVEN resources created by bootstrap (the fixture)
    # THEN DynamoDB deletes each table's items by their `expires_at`
    assert [_ttl(t) for t in _tables(aws)] == [ON] * len(_tables(aws))


def test_bootstrap_again_leaves_ttl_on_where_dynamodb_refuses_to_enable_it_twice(aws, dynamodb_ttl_rule):
    # GIVEN bootstrapped resources, and DynamoDB refusing to enable a TTL that is already on
    # (as it does when bootstrap runs again, or two run at once)
    # WHEN bootstrap runs again
    ensure_resources(aws.settings)

    # THEN it finishes and TTL stays on `expires_at`
    assert [_ttl(t) for t in _tables(aws)] == [ON] * len(_tables(aws))


def test_bootstrap_stops_where_ttl_is_on_for_another_attribute(aws, dynamodb_ttl_rule):
    # GIVEN a table whose TTL someone set on another attribute: our expiries would never delete anything
    _set_ttl(aws.settings.risk_table, False)
    _set_ttl(aws.settings.risk_table, True, "ttl")

    # WHEN bootstrap runs, THEN it stops with DynamoDB's refusal
    with pytest.raises(ClientError, match="ValidationException"):
        ensure_resources(aws.settings)


def test_a_file_run_keeps_but_does_not_score_users_already_past_their_retention(aws):
    # GIVEN a backfill holding a user last seen 400 days before it lands (retention 365) and one seen last week
    data = _rows(("gone", T - 400 * SECONDS_PER_DAY, "purchase"), ("here", T - 7 * SECONDS_PER_DAY, "session"))

    # WHEN the S3 trigger processes it
    summary = _land(aws, "incoming/backfill.csv", data)

    # THEN both states are merged, the gone user's with an expiry already past for TTL to delete,
    # but only the active user is scored and may be contacted; the summary counts the one left out
    states, risks = _expiries(aws)
    assert states == {
        "gone": int(T - 400 * SECONDS_PER_DAY) + RETENTION,
        "here": int(T - 7 * SECONDS_PER_DAY) + RETENTION,
    }
    assert states["gone"] < T
    assert set(risks) == {"here"}
    assert summary["expired_skipped"] == 1 and summary["users_scored"] == 1
    assert "gone" not in {m["user_id"] for m in aws.drain_all()}
