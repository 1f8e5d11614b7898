"""The risk lookup API through chalice.test.Client on moto: a user, a tier pair page by page, and the export.

Risk items come from the real S3 handler scoring a real file, so the index key is the one the chunk writes.
"""

from __future__ import annotations

import base64
import csv
import json
from collections import defaultdict
from urllib.parse import quote, urlencode

import boto3
import pytest
from chalice import IAMAuthorizer
from chalice.deploy.swagger import SwaggerGenerator

from chalicelib import runtime
from chalicelib.lookup.tier_index import INDEX_NAME, KEY_ATTRIBUTE, shard_of
from chalicelib.settings import Settings
from churnguard_offline import cli
from churnguard_offline.bootstrap import ensure_resources
from tests.integration.conftest import Aws, csv_bytes, strict_moto
from tests.unit.lookup.test_lookup import INTERNAL


@pytest.fixture
def scored(aws, client, small, tmp_path) -> dict[str, dict]:
    """Two hundred users scored by the S3 handler; their risk items by user id."""
    [summary] = client.lambda_.invoke(
        "on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    ).payload
    assert summary["status"] == "succeeded"
    return {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}


def _get(client, path: str, **params: str):
    response = client.http.get(path + (f"?{urlencode(params)}" if params else ""))
    return response.status_code, json.loads(response.body) if response.body else None


def _list_all(client, **params: str) -> list[list[dict]]:
    """Follow a listing's `next` tokens to the end; return each page's users."""
    pages, token = [], None
    while True:
        status, body = _get(client, "/users", **params, **({"next": token} if token else {}))
        assert status == 200, body
        pages.append(body["users"])
        assert body["count"] == len(body["users"])
        token = body["next"]
        if token is None:
            return pages


def test_a_scored_user_is_found_with_score_tiers_reasons_segment_message_exposure_and_holdout(scored, client):
    # GIVEN a messaged user and a held-out one
    messaged = next(i for i in scored.values() if i.get("contact_status") == "sent")
    held = next(i for i in scored.values() if i.get("holdout"))
    for stored in (messaged, held):
        # WHEN each is looked up
        status, view = _get(client, f"/users/{quote(stored['user_id'])}")

        # THEN the answer is what the risk item says, without its internals
        assert status == 200
        assert view["churn_probability"] == pytest.approx(float(stored["churn_probability"]))
        assert (view["risk_tier"], view["value_tier"]) == (stored["risk_tier"], stored["value_tier"])
        assert view["reasons"] == stored["reasons"] and view["action"] == stored["action"]
        assert (view["rfm_segment"], view["activity_cluster"]) == (stored["rfm_segment"], stored["activity_cluster"])
        assert view["holdout"] is bool(stored["holdout"]) and view["model_version"] == stored["model_version"]
        assert not INTERNAL & set(view)
    assert _get(client, f"/users/{quote(messaged['user_id'])}")[1]["last_message"] == {
        "message_id": messaged["contact_message_id"],
        "status": "sent",
        "as_of": messaged["contact_as_of"],
    }
    assert _get(client, f"/users/{quote(held['user_id'])}")[1]["exposure"]["group"] == "holdout"


def test_an_unknown_user_answers_404_and_a_malformed_id_400(scored, client):
    assert _get(client, "/users/nobody-at-all")[0] == 404
    for bad in ("x" * 129, "%01abc", "%1Flease%1Frun", "%20padded", "%FF%FE"):
        status, body = _get(client, f"/users/{bad}")
        assert status == 400, bad
        assert body["Code"] == "BadRequestError"


def test_a_tier_pair_is_listed_page_by_page_across_its_shards_each_user_once(scored, client):
    # GIVEN the users the handler scored, by tier pair
    by_pair = defaultdict(set)
    for uid, stored in scored.items():
        by_pair[(stored["risk_tier"], stored["value_tier"])].add(uid)
    (risk, value), expected = max(by_pair.items(), key=lambda kv: len(kv[1]))
    assert len({shard_of(u) for u in expected}) > 3

    # WHEN the largest pair is listed five at a time, following every token
    pages = _list_all(client, risk_tier=risk, value_tier=value, limit="5")

    # THEN every user of the pair comes exactly once, no other, none with internals
    listed = [u["user_id"] for page in pages for u in page]
    assert len(listed) == len(set(listed)) and set(listed) == expected
    assert all(len(page) <= 5 for page in pages) and len(pages) >= -(-len(expected) // 5)  # at least ⌈n / 5⌉
    assert all(not INTERNAL & set(u) for page in pages for u in page)
    # AND a listing of every tier covers every user
    everyone = [u["user_id"] for page in _list_all(client, limit="1000") for u in page]
    assert sorted(everyone) == sorted(scored)


def test_a_tampered_or_foreign_next_token_and_a_bad_limit_answer_400(scored, client):
    status, body = _get(client, "/users", risk_tier="low", value_tier="low", limit="2")
    token = body["next"]
    assert status == 200 and token
    decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**decoded, "k": 999}).encode()).decode()
    for params in (
        {"risk_tier": "low", "value_tier": "low", "next": token[:-2]},
        {"risk_tier": "low", "value_tier": "low", "next": forged},
        {"risk_tier": "high", "value_tier": "low", "next": token},
        {"risk_tier": "low", "value_tier": "low", "limit": "100000"},
        {"risk_tier": "urgent"},
        {"risk_teir": "high"},
    ):
        assert _get(client, "/users", **params)[0] == 400, params
    assert _get(client, "/users", risk_tier="low", value_tier="low", next=token)[0] == 200


def test_both_routes_require_iam_authorization_in_the_app_and_the_generated_api():
    from app import app

    for path in ("/users/{user_id}", "/users"):
        assert isinstance(app.routes[path]["GET"].authorizer, IAMAuthorizer), path
    swagger = SwaggerGenerator("us-east-1", {"api_handler_arn": "arn:aws:lambda:us-east-1:1:function:f"})
    document = swagger.generate_swagger(app)
    assert document["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    for path in ("/users/{user_id}", "/users"):
        assert document["paths"][path]["get"]["security"] == [{"sigv4": []}], path


def test_the_lookup_reads_a_shared_table_without_showing_state_or_the_runs_own_items(
    monkeypatch, stage_env, small, tmp_path
):
    # GIVEN STATE_TABLE naming the same table as RISK_TABLE, a file scored into it
    monkeypatch.setenv("STATE_TABLE", stage_env["RISK_TABLE"])
    few = small.select(small.user_index < 60)
    with strict_moto():
        runtime.clear()
        ensure_resources()
        aws = Aws(Settings.from_env())
        aws.land("incoming/a.csv", csv_bytes(few, tmp_path))
        runtime.get_pipeline().process_object("incoming/a.csv", None, None)
        items = aws.items(stage_env["RISK_TABLE"], runs_own=True)
        lookup = runtime.get_lookup()

        # WHEN every user is listed and one is looked up
        listed = []
        page = lookup.page({"limit": "1000"})
        while True:
            listed += page.users
            if page.next is None:
                break
            page = lookup.page({"limit": "1000", "next": page.next})
        one = lookup.user(few.user_ids[0])
        runtime.clear()

    # THEN the listing holds the scored users only (no lease, ledger or cap item), and no state
    assert sorted(u["user_id"] for u in listed) == sorted(few.user_ids)
    assert any(i["user_id"].startswith("\x1f") for i in items), "the runs' own items share the table"
    assert "state" not in one and one["risk_tier"] in ("high", "medium", "low")


def test_bootstrap_adds_the_tier_index_to_a_table_made_before_it(stage_env):
    # GIVEN a risk table as an older bootstrap made it, holding an item with the index key
    with strict_moto():
        ddb = boto3.client("dynamodb")
        ddb.create_table(
            TableName=stage_env["RISK_TABLE"],
            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        key = f"high#high#{shard_of('u1'):02d}"
        ddb.put_item(
            TableName=stage_env["RISK_TABLE"],
            Item={"user_id": {"S": "u1"}, KEY_ATTRIBUTE: {"S": key}, "risk_tier": {"S": "high"}},
        )

        # WHEN ensure_resources runs, twice
        ensure_resources()
        ensure_resources()

        # THEN the table has the index, built, and it finds the item
        (index,) = ddb.describe_table(TableName=stage_env["RISK_TABLE"])["Table"]["GlobalSecondaryIndexes"]
        found = ddb.query(
            TableName=stage_env["RISK_TABLE"],
            IndexName=INDEX_NAME,
            KeyConditionExpression="#k = :k",
            ExpressionAttributeNames={"#k": KEY_ATTRIBUTE},
            ExpressionAttributeValues={":k": {"S": key}},
        )["Items"]
    assert index["IndexName"] == INDEX_NAME and index["IndexStatus"] == "ACTIVE"
    assert index["Projection"]["ProjectionType"] == "INCLUDE" and "state" not in index["Projection"]["NonKeyAttributes"]
    assert [i["user_id"]["S"] for i in found] == ["u1"]


def test_export_writes_every_user_of_the_tier_pair_once(scored, aws, tmp_path, capsys):
    # GIVEN the scored users of the largest tier pair
    by_pair = defaultdict(set)
    for uid, stored in scored.items():
        by_pair[(stored["risk_tier"], stored["value_tier"])].add(uid)
    (risk, value), expected = max(by_pair.items(), key=lambda kv: len(kv[1]))
    out = tmp_path / "crm.csv"

    # WHEN they are exported
    runtime.clear()
    status = cli.main(["export", "--risk-tier", risk, "--value-tier", value, "--out", str(out)])

    # THEN the CSV holds each of them once, with the score, segment and exposure columns
    assert status == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["user_id"] for r in rows) == sorted(expected)
    for r in rows:
        stored = scored[r["user_id"]]
        assert (r["risk_tier"], r["value_tier"], r["rfm_segment"]) == (risk, value, stored["rfm_segment"])
        assert r["holdout"] == ("true" if stored["holdout"] else "false")
        assert r["exposure_group"] == stored.get("exposure_group", "")
    assert json.loads(capsys.readouterr().out) == {"out": str(out), "users": len(expected)}
