"""The state machines' Terraform: added beside chalice's once their workers exist, each role only what it needs.

The patch is tested on a document shaped as chalice 1.34 generates it (`aws_lambda_function.<handler>` with its
own `aws_iam_role.<handler>_role`, checked against a real `chalice package` of `@app.lambda_function(name=...)`),
so these tests hold whether or not the workers are in app.py yet.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from chalicelib.settings import Settings
from tests.conftest import ROOT, load_script
from tests.infra.test_infrastructure import REFERENCE, Config, address, interpolations, listed, read, strings

STATEMACHINES = ROOT / "infra" / "statemachines"
PREFIX = "churnguard-dev"
FILE_HANDLERS = ("on_behaviour_file", "scheduled_scoring", "on_behaviour_queue")
BACKFILL_WORKERS = ("backfill_split", "backfill_range", "backfill_shard", "backfill_finish")
SCHEDULE_WORKERS = ("schedule_plan", "schedule_segment", "schedule_finish")
# Actions AWS documents without resource-level permissions: the only ones granted on "*".
UNSCOPED = {
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
}


_CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())
STAGE_ENV = {**_CONFIG["environment_variables"], **_CONFIG["stages"]["dev"]["environment_variables"]}


packaging = load_script("package")


def chalice_function(handler: str) -> dict[str, Any]:
    """Return one function as chalice 1.34 generates it for the dev stage."""
    return {
        "function_name": f"{PREFIX}-{handler}",
        "runtime": "python3.12",
        "handler": f"app.{handler}",
        "memory_size": 2048,
        "tags": {"aws-chalice": "version=1.34.0:stage=dev:app=churnguard"},
        "timeout": 900,
        "source_code_hash": '${filebase64sha256("${path.module}/deployment.zip")}',
        "filename": "${path.module}/deployment.zip",
        "environment": {"variables": dict(STAGE_ENV)},
        "role": f"${{aws_iam_role.{handler}_role.arn}}",
    }


def chalice_document(handlers: tuple[str, ...]) -> dict[str, Any]:
    """Return a generated chalice.tf.json with these handlers (each with its own role, as autogen_policy=false)."""
    return {
        "resource": {
            "aws_iam_role": {f"{h}_role": {"name": f"{PREFIX}-{h}", "assume_role_policy": "{}"} for h in handlers},
            "aws_iam_role_policy": {
                f"{h}_role": {"name": f"{h}_rolePolicy", "role": f"${{aws_iam_role.{h}_role.id}}", "policy": "{}"}
                for h in handlers
            },
            "aws_lambda_function": {h: chalice_function(h) for h in handlers},
        },
        "locals": {},
        "data": {
            "aws_caller_identity": {"chalice": {}},
            "aws_partition": {"chalice": {}},
            "aws_region": {"chalice": {}},
        },
    }


ALL_HANDLERS = (*FILE_HANDLERS, *BACKFILL_WORKERS, *SCHEDULE_WORKERS)


@pytest.fixture(scope="module")
def patched() -> Config:
    """The patched document of an app with every worker, read with the hand-written infra/ beside it."""
    document = packaging.patch_terraform(chalice_document(ALL_HANDLERS), "dev")
    config = read(ROOT / "infra")
    config.files["chalice.tf.json"] = document
    return config


def policy_statements(config: Config, policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the statements of a role policy whose document is an aws_iam_policy_document."""
    name = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.([\w-]+)\.json\}", policy["policy"]).group(1)
    return listed(config.resources("data")[f"aws_iam_policy_document.{name}"]["statement"])


def policies_of_role(config: Config, role: str) -> list[dict[str, Any]]:
    return [p for p in config.of_type("aws_iam_role_policy").values() if p["role"] == f"${{aws_iam_role.{role}.id}}"]


def placeholders(machine: str) -> set[str]:
    return set(packaging.PLACEHOLDER.findall((STATEMACHINES / f"{machine}.asl.json").read_text()))


# ---- when a machine is added ---------------------------------------------------------------------------
def test_no_state_machine_is_added_while_its_workers_are_not_in_the_app():
    # GIVEN an app with only the contract's handlers, and one with the backfill's workers but not the schedule's
    bare = packaging.patch_terraform(chalice_document(FILE_HANDLERS), "dev")
    backfill_only = packaging.patch_terraform(chalice_document((*FILE_HANDLERS, *BACKFILL_WORKERS)), "dev")
    # THEN the first has no machine and no machine ARN in any environment; the second only the backfill
    assert "aws_sfn_state_machine" not in bare["resource"]
    for function in bare["resource"]["aws_lambda_function"].values():
        assert not {v for v in function["environment"]["variables"] if v.endswith("_STATE_MACHINE_ARN")}
    assert set(backfill_only["resource"]["aws_sfn_state_machine"]) == {"backfill"}
    for function in backfill_only["resource"]["aws_lambda_function"].values():
        assert "SCHEDULE_STATE_MACHINE_ARN" not in function["environment"]["variables"]
        assert "BACKFILL_STATE_MACHINE_ARN" in function["environment"]["variables"]


def test_a_missing_definition_adds_no_machine(tmp_path):
    document = chalice_document(ALL_HANDLERS)
    assert packaging.add_state_machines(document, PREFIX, definitions=tmp_path) == []
    assert "aws_sfn_state_machine" not in document["resource"]


def test_the_placeholder_definitions_name_exactly_the_agreed_workers_and_the_bucket():
    assert placeholders("backfill") == {*BACKFILL_WORKERS, "bucket"}
    assert placeholders("schedule") == {*SCHEDULE_WORKERS, "bucket"}


# ---- the machines ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("machine", ["backfill", "schedule"])
def test_each_machine_is_a_standard_workflow_whose_definition_binds_every_placeholder(patched, machine):
    resource = patched.of_type("aws_sfn_state_machine")[machine]
    assert resource["name"] == f"{PREFIX}-{machine}" and resource["type"] == "STANDARD"
    (expression,) = interpolations(resource["definition"])
    template = re.fullmatch(
        r'templatefile\("\$\{path\.module\}/statemachines/(\w+)\.asl\.json", \{(.*)\}\)', expression
    )
    assert template and template.group(1) == machine
    bound = dict(re.findall(r"(\w+) = ([\w.]+)", template.group(2)))
    assert set(bound) == placeholders(machine), "templatefile fails on a placeholder it is not given"
    for name, value in bound.items():
        expected = "aws_s3_bucket.behaviour.bucket" if name == "bucket" else f"aws_lambda_function.{name}.arn"
        assert value == expected


@pytest.mark.parametrize("machine", ["backfill", "schedule"])
def test_each_machine_logs_its_executions_with_a_retention_and_is_traced(patched, machine):
    resource = patched.of_type("aws_sfn_state_machine")[machine]
    logging = resource["logging_configuration"]
    group = patched.of_type("aws_cloudwatch_log_group")[f"{machine}_state_machine"]
    assert logging["log_destination"] == f"${{aws_cloudwatch_log_group.{machine}_state_machine.arn}}:*"
    assert logging["include_execution_data"] is True and logging["level"] in ("ERROR", "ALL")
    assert group["retention_in_days"] == "${var.log_retention_days}"
    assert group["name"] == f"/aws/vendedlogs/states/{PREFIX}-{machine}"
    assert resource["tracing_configuration"] == {"enabled": True}
    assert f"aws_iam_role_policy.{machine}_state_machine" in resource["depends_on"], "log delivery is checked"


def test_the_machines_arns_are_an_output(patched):
    (output,) = [body for _, name, body in patched.blocks("output") if name == "state_machine_arns"]
    (expression,) = interpolations(output["value"])
    assert dict(re.findall(r"(\w+) = aws_sfn_state_machine\.(\w+)\.arn", expression)) == {
        "backfill": "backfill",
        "schedule": "schedule",
    }


def test_every_function_is_told_each_machines_arn_spelled_from_its_name(patched):
    machines = patched.of_type("aws_sfn_state_machine")
    for name, function in patched.of_type("aws_lambda_function").items():
        env = function["environment"]["variables"]
        for machine, resource in machines.items():
            arn = env[f"{machine.upper()}_STATE_MACHINE_ARN"]
            assert arn.endswith(
                f":states:${{data.aws_region.chalice.name}}:"
                f"${{data.aws_caller_identity.chalice.account_id}}:stateMachine:{resource['name']}"
            )
        # AND the settings read from it name both machines, as the runs see them
        concrete = {k: re.sub(r"\$\{[^}]+\}", "x", v) for k, v in env.items()}
        assert set(Settings.from_env(concrete).state_machines) == set(machines), name


def dependencies(config: Config) -> dict[str, set[str]]:
    """Return, per resource address, the resources it refers to or depends on (the graph Terraform orders by)."""
    graph = {}
    for kind, prefix in (("resource", ""), ("data", "data.")):
        for node, body in config.resources(kind).items():
            refs = {
                address(m) for _, t in strings(body, node) for e in interpolations(t) for m in REFERENCE.finditer(e)
            }
            refs |= set(body.get("depends_on", []))
            graph[f"{prefix}{node}"] = {r for r in refs if not r.startswith(("var.", "local."))}
    return graph


def test_the_package_has_no_dependency_cycle(patched):
    graph = dependencies(patched)
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"cycle: {' -> '.join([*path, node])}"
        state[node] = "open"
        for target in graph.get(node.split("[")[0], ()):
            visit(target, [*path, node])
        state[node] = "done"

    for node in graph:
        visit(node, [])
    assert any("aws_sfn_state_machine" in n for n in graph)


# ---- the roles --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("machine", ["backfill", "schedule"])
def test_the_machine_role_invokes_exactly_its_workers_and_starts_only_its_own_children(patched, machine):
    role = patched.of_type("aws_iam_role")[f"{machine}_state_machine"]
    (trust,) = listed(patched.resources("data")[f"aws_iam_policy_document.{machine}_state_machine_trust"]["statement"])
    assert trust["principals"] == {"type": "Service", "identifiers": ["states.amazonaws.com"]}
    assert trust["condition"]["variable"] == "aws:SourceAccount", "no other account's Step Functions"
    assert role["assume_role_policy"].endswith(f"{machine}_state_machine_trust.json}}")
    (policy,) = policies_of_role(patched, f"{machine}_state_machine")
    statements = {s["sid"]: s for s in policy_statements(patched, policy)}
    workers = placeholders(machine) - {"bucket"}
    assert statements["InvokeItsWorkers"]["actions"] == ["lambda:InvokeFunction"]
    assert set(statements["InvokeItsWorkers"]["resources"]) == {f"${{aws_lambda_function.{w}.arn}}" for w in workers}
    name = f"{PREFIX}-{machine}"
    (own,) = statements["RunItsDistributedMapChildren"]["resources"]
    assert own.endswith(f":stateMachine:{name}")
    (children,) = statements["WatchAndRedriveItsChildren"]["resources"]
    assert children.endswith(f":execution:{name}/*"), "a Distributed Map's children are named <machine>/<map run>"
    prefix = packaging.STATE_MACHINES[machine].items_prefix
    assert statements["ReadItsItemLists"] == {
        "sid": "ReadItsItemLists",
        "effect": "Allow",
        "actions": ["s3:GetObject"],
        "resources": [f"${{aws_s3_bucket.behaviour.arn}}/{prefix}*"],
    }


def test_no_wildcard_action_and_no_wildcard_resource_beyond_what_aws_requires(patched):
    for name, body in patched.resources("data").items():
        if not name.startswith("aws_iam_policy_document."):
            continue
        for statement in listed(body["statement"]):
            if statement.get("effect", "Allow") != "Allow":
                continue  # (the buckets' TLS-only policies deny s3:* to everyone)
            for action in statement["actions"]:
                assert "*" not in action, f"{name}: {action}"
            if "*" in statement.get("resources", []):
                assert set(statement["actions"]) <= UNSCOPED, f"{name}: {statement['actions']} on *"
            for resource in statement.get("resources", []):
                assert resource == "*" or not resource.endswith(("/*/*", ":*")), f"{name}: {resource}"


def test_each_function_may_start_only_the_machines_it_starts(patched):
    machines = patched.of_type("aws_sfn_state_machine")
    for handler in ALL_HANDLERS:
        grants = [
            s
            for p in policies_of_role(patched, f"{handler}_role")
            if p["policy"].startswith("${data.")
            for s in policy_statements(patched, p)
        ]
        started = {
            r.removeprefix("${aws_sfn_state_machine.").removesuffix(".arn}") for s in grants for r in s["resources"]
        }
        expected = {m for m, spec in packaging.STATE_MACHINES.items() if handler in spec.starters and m in machines}
        assert started == expected, handler
        for statement in grants:
            assert statement["actions"] == ["states:StartExecution"], handler
    assert packaging.STATE_MACHINES["schedule"].starters == ("scheduled_scoring",)
    assert "on_behaviour_file" in packaging.STATE_MACHINES["backfill"].starters


def test_a_definition_with_a_list_reader_and_a_result_writer_gets_exactly_those_grants(tmp_path):
    # GIVEN a backfill definition whose map lists objects and writes its results
    definition = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "ItemReader": {"Resource": "arn:aws:states:::s3:listObjectsV2", "Parameters": {"Bucket": "${bucket}"}},
                "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": "${bucket}"}},
                "ItemProcessor": {
                    "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                    "StartAt": "T",
                    "States": {
                        "T": {
                            "Type": "Task",
                            "Resource": "arn:aws:states:::lambda:invoke",
                            "Parameters": {"FunctionName": "${backfill_range}"},
                            "End": True,
                        }
                    },
                },
                "End": True,
            }
        },
    }
    (tmp_path / "backfill.asl.json").write_text(json.dumps(definition))
    document = chalice_document((*FILE_HANDLERS, "backfill_range"))
    # WHEN it is patched
    assert packaging.add_state_machines(document, PREFIX, definitions=tmp_path) == ["backfill"]
    statements = {
        s["sid"]: s for s in document["data"]["aws_iam_policy_document"]["backfill_state_machine"]["statement"]
    }
    # THEN it may list only the items prefix, write its results there, and read no item list by key
    prefix = packaging.STATE_MACHINES["backfill"].items_prefix
    assert statements["ListItsItems"]["condition"]["values"] == [f"{prefix}*"]
    assert "s3:PutObject" in statements["WriteItsMapResults"]["actions"]
    assert "ReadItsItemLists" not in statements


# ---- the package ------------------------------------------------------------------------------------------
def test_the_definitions_are_written_beside_the_terraform_that_templates_them(tmp_path, monkeypatch):
    out = tmp_path / "package"
    out.mkdir()
    (out / "chalice.tf.json").write_text(json.dumps(chalice_document(ALL_HANDLERS)))
    (out / "statemachines").mkdir()
    (out / "statemachines" / "stale.asl.json").write_text("{}")
    packaging.write_terraform(out, "dev")
    written = sorted(p.name for p in (out / "statemachines").iterdir())
    assert written == sorted(p.name for p in STATEMACHINES.glob("*.asl.json"))
    for name in written:
        assert (out / "statemachines" / name).read_text() == (STATEMACHINES / name).read_text()
    tfvars = json.loads((out / "terraform.tfvars.json").read_text())
    assert set(tfvars["lambda_function_names"]) == {f"{PREFIX}-{h}" for h in ALL_HANDLERS}


def test_the_validated_copy_takes_the_definitions_along():
    source = (ROOT / "scripts" / "terraform_validate.py").read_text()
    assert "statemachines" in source
