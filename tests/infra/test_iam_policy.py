"""The deployed role may do exactly what the code does, on this stage's resources only."""

from __future__ import annotations

import json
import re

import pytest

from chalicelib.aws.bucket import (
    ARCHIVE_PREFIX,
    BACKFILL_PREFIX,
    CHECKPOINT_PREFIX,
    CLOSED_PREFIX,
    DEAD_LETTER_PREFIX,
    RUNS_PREFIX,
)
from chalicelib.settings import Settings
from tests.conftest import ROOT
from tests.strict_aws import IamPolicy

CHALICE = ROOT / ".chalice"
# Each AWS call the adapters make, and the IAM actions it needs (SendMessageBatch is authorised as
# SendMessage; GetObject with a VersionId needs GetObjectVersion; a listing is ListBucket).
NEEDED = {
    "get_object": {"s3:GetObject", "s3:GetObjectVersion"},
    "put_object": {"s3:PutObject"},
    "copy_object": {"s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"},
    "delete_object": {"s3:DeleteObject"},
    "delete_objects": {"s3:DeleteObject"},
    "list_objects_v2": {"s3:ListBucket"},
    "get_bucket_versioning": {"s3:GetBucketVersioning"},
    "batch_get_item": {"dynamodb:BatchGetItem"},
    "get_item": {"dynamodb:GetItem"},
    "put_item": {"dynamodb:PutItem"},
    "update_item": {"dynamodb:UpdateItem"},
    "delete_item": {"dynamodb:DeleteItem"},
    "scan": {"dynamodb:Scan"},
    "query": {"dynamodb:Query"},
    "describe_table": {"dynamodb:DescribeTable"},
    # A transaction is authorised item by item, as the writes it holds (the message counter's are UpdateItem).
    "transact_write_items": {"dynamodb:UpdateItem"},
    "get_queue_url": {"sqs:GetQueueUrl"},
    "send_message_batch": {"sqs:SendMessage"},
    "start_execution": {"states:StartExecution"},
    "receive_message": {"sqs:ReceiveMessage"},
    "get_queue_attributes": {"sqs:GetQueueAttributes"},
    "delete_message": {"sqs:DeleteMessage"},
}
# Granted by the build's Terraform, not by the stage's policy file: only the functions that start a state machine
# may, and only that machine (scripts/package.py STATE_MACHINES; tests/infra/test_state_machines.py). Without the
# Terraform there is no machine, no ARN in the environment, and no start.
GRANTED_BY_TERRAFORM = {"states:StartExecution"}
# Granted for what AWS does on the functions' behalf, not for a call of the code: the SQS event source mapping
# of on_behaviour_queue reads the files queue (receive, delete, queue attributes), and Lambda sends the record of a
# failed asynchronous invocation of on_behaviour_file to its on-failure destination with the function's role.
FOR_AWS = {"sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"}
# The risk lookup's adapter: only the API's function (chalice's api_handler) calls it, with a role of its own.
API_ADAPTERS = ("risk_reads.py",)
API_FUNCTION = "api_handler"
LOG_ACTIONS = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}


def stages() -> dict:
    return json.loads((CHALICE / "config.json").read_text())["stages"]


@pytest.fixture(params=sorted(stages()))
def stage(request):
    config = stages()[request.param]
    assert config["autogen_policy"] is False, "each stage names its own hand-written policy"
    policy = json.loads((CHALICE / config["iam_policy_file"]).read_text())
    return request.param, config, policy


def _statements(policy):
    return [s for s in policy["Statement"] if s["Effect"] == "Allow"]


def _listed(value):
    return value if isinstance(value, list) else [value]


def test_no_wildcard_action_or_resource(stage):
    _, _, policy = stage
    for statement in _statements(policy):
        for action in _listed(statement["Action"]):
            assert "*" not in action, f"wildcard action {action}"
        for resource in _listed(statement["Resource"]):
            assert resource != "*" and not resource.endswith(":*:*"), f"wildcard resource {resource}"
            assert not re.fullmatch(r"arn:aws:s3:::[^/]+/\*", resource), f"the whole bucket {resource}"


def test_every_resource_is_this_stages_own(stage):
    name, config, policy = stage
    env = config["environment_variables"]
    own = [env["BEHAVIOUR_BUCKET"], env["STATE_TABLE"], env["RISK_TABLE"], f"/aws/lambda/churnguard-{name}-"]
    own += [v for k, v in env.items() if k.startswith("QUEUE_") or k == "FILES_QUEUE"]
    for statement in _statements(policy):
        for resource in _listed(statement["Resource"]):
            assert any(part in resource for part in own), f"{resource} is not one of stage {name}'s resources"


def adapter_calls(paths) -> set[str]:
    """Return the client calls the adapters in `paths` make."""
    source = "".join(p.read_text() for p in paths)
    paginated = set(re.findall(r'get_paginator\("([a-z_0-9]+)"\)', source))
    # (the DynamoDB adapter passes its client's methods to a wrapper, so match references, not just calls)
    calls = set(re.findall(r"client\.([a-z][a-z_0-9]*)", source)) - {"exceptions", "meta", "get_paginator"} | paginated
    assert calls, "the adapters' calls were found"
    return calls


def test_every_call_the_code_makes_is_allowed(stage):
    _, _, policy = stage
    granted = {a for s in _statements(policy) for a in _listed(s["Action"])}
    calls = adapter_calls(p for p in (ROOT / "chalicelib" / "aws").glob("*.py") if p.name not in API_ADAPTERS)
    unknown = calls - NEEDED.keys()
    assert not unknown, f"calls with no IAM mapping here, add them: {sorted(unknown)}"
    missing = {action for call in calls for action in NEEDED[call]} - granted - GRANTED_BY_TERRAFORM
    assert not granted & GRANTED_BY_TERRAFORM, "the stage policy would let every function start every machine"
    assert not missing, f"the code needs {sorted(missing)}"
    unused = (
        granted
        - {action for call in calls for action in NEEDED[call]}
        - {
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
        }
        - FOR_AWS
    )
    assert not unused, f"granted but never used: {sorted(unused)}"


# Every prefix where the code reads a key that may not be there, and why it must learn "not there" (404) rather
# than AccessDenied (403). S3 answers 404 only to a caller with s3:ListBucket on the bucket, and a GET carries
# no s3:prefix, so a ListBucket grant conditioned on s3:prefix does not count (tests/strict_aws.py).
PROBED = {
    "incoming/": "a landed file deleted before its event is handled ends 'gone', not in a retry loop",
    "checkpoints/": "an unfinished run's checkpoint: absent on every first attempt",
    "runs/": "a schedule's run record: absent until its first attempt finishes",
    "dead-letter/": "what a run left to replay: absent when nothing was left",
    "outcomes/closed/": "the exposures a run replaced: absent when it replaced none, or archived meanwhile",
    "outcomes/archive/": "a day's archived exposures: absent until the first of that day is archived",
    "suppression/": "the opt-out list: absent until an operator uploads one",
    "backfill/": "a backfill's plan, range and shard summaries, checkpoints: absent until each step has run",
}


def test_every_prefix_the_code_probes_answers_404_for_a_missing_key(stage):
    _, config, document = stage
    env = config["environment_variables"]
    bucket = env["BEHAVIOUR_BUCKET"]
    probed = {CHECKPOINT_PREFIX, RUNS_PREFIX, DEAD_LETTER_PREFIX, CLOSED_PREFIX, ARCHIVE_PREFIX, BACKFILL_PREFIX}
    probed |= {env.get("INCOMING_PREFIX", "incoming/"), Settings.from_env(env).opt_out_key.rsplit("/", 1)[0] + "/"}
    assert probed == set(PROBED), "a new probe needs its reason here"
    policy = IamPolicy(document)
    for prefix in PROBED:
        assert policy.allows("s3:GetObject", f"arn:aws:s3:::{bucket}/{prefix}x.json"), prefix
    assert policy.missing_key_answers_404(bucket), "a GET of a missing key would answer 403 AccessDenied"


# ---- the risk lookup API's role -------------------------------------------------------------------------
def api_policy(config: dict) -> dict:
    """Return the policy document the stage gives the API's function."""
    return json.loads((CHALICE / config["lambda_functions"][API_FUNCTION]["iam_policy_file"]).read_text())


def test_the_api_function_has_a_policy_of_its_own(stage):
    _, config, _ = stage
    own = config["lambda_functions"][API_FUNCTION]["iam_policy_file"]
    assert own != config["iam_policy_file"] and (CHALICE / own).is_file()
    # API Gateway gives up after 29 s: a longer function timeout would only run on after the caller is gone.
    assert config["lambda_functions"][API_FUNCTION]["lambda_timeout"] <= 30


def test_the_api_role_may_only_read_the_risk_table_and_its_tier_index(stage):
    name, config, _ = stage
    env = config["environment_variables"]
    risk = f"arn:aws:dynamodb:eu-west-1:123456789012:table/{env['RISK_TABLE']}"
    state = f"arn:aws:dynamodb:eu-west-1:123456789012:table/{env['STATE_TABLE']}"
    policy = IamPolicy(api_policy(config))
    # It reads one user's item and queries the tier index...
    assert policy.allows("dynamodb:GetItem", risk)
    assert policy.allows("dynamodb:Query", f"{risk}/index/by_tier")
    # ...and nothing else: no write, no scan of the table, no other table, bucket or queue.
    for action in ("PutItem", "UpdateItem", "DeleteItem", "BatchGetItem", "BatchWriteItem", "Scan", "Query"):
        assert not policy.allows(f"dynamodb:{action}", risk), action
    assert not policy.allows("dynamodb:GetItem", state) or env["STATE_TABLE"] == env["RISK_TABLE"]
    assert not policy.allows("dynamodb:Scan", f"{risk}/index/by_tier")
    bucket = env["BEHAVIOUR_BUCKET"]
    for action, resource in (
        ("s3:GetObject", f"arn:aws:s3:::{bucket}/runs/x.json"),
        ("s3:ListBucket", f"arn:aws:s3:::{bucket}"),
        ("sqs:SendMessage", f"arn:aws:sqs:eu-west-1:123456789012:{env['QUEUE_HIGH']}"),
        ("states:StartExecution", "arn:aws:states:eu-west-1:123456789012:stateMachine:churnguard-dev-schedule"),
    ):
        assert not policy.allows(action, resource), action
    granted = {a for s in _statements(api_policy(config)) for a in _listed(s["Action"])}
    assert granted == {"dynamodb:GetItem", "dynamodb:Query"} | LOG_ACTIONS
    # It writes its logs to its own log group only (chalice names the API's function <app>-<stage>).
    assert policy.allows(
        "logs:PutLogEvents", f"arn:aws:logs:eu-west-1:1:log-group:/aws/lambda/churnguard-{name}:log-stream:s"
    )
    assert not policy.allows("logs:PutLogEvents", f"arn:aws:logs:eu-west-1:1:log-group:/aws/lambda/churnguard-{name}-x")


def test_every_call_the_lookup_adapter_makes_is_allowed_to_the_api_and_nothing_more(stage):
    _, config, _ = stage
    calls = adapter_calls(ROOT / "chalicelib" / "aws" / name for name in API_ADAPTERS)
    needed = {action for call in calls for action in NEEDED[call]}
    granted = {a for s in _statements(api_policy(config)) for a in _listed(s["Action"])}
    assert needed == granted - LOG_ACTIONS
