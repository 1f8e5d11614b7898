"""`make asl-check`: asl-validator (npm, pinned) on every definition, placeholders filled in as Terraform will."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, load_script

STATEMACHINES = ROOT / "infra" / "statemachines"


validate_asl = load_script("validate_asl")


@pytest.fixture
def validator() -> Path:
    """asl-validator from node_modules/; `make test` (which names CHURNGUARD_PACKAGE_DIR) installs it: missing fails."""
    if not validate_asl.VALIDATOR.exists():
        message = "node_modules/ is not installed: run `npm ci` (make asl-check does)"
        if os.environ.get("CHURNGUARD_PACKAGE_DIR"):
            pytest.fail(message)
        pytest.skip(message)
    return validate_asl.VALIDATOR


def definition(**task: Any) -> dict[str, Any]:
    """Return a one-Task definition calling the backfill_range worker, with `task` merged into the Task."""
    state = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "${backfill_range}", "Payload.$": "$"},
        "End": True,
    }
    return {"StartAt": "T", "States": {"T": {**state, **task}}}


def test_the_validator_is_a_pinned_dev_dependency_installed_by_npm_ci():
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = package["devDependencies"]["asl-validator"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "an exact version, not a range"
    assert lock["packages"]["node_modules/asl-validator"]["version"] == pinned
    assert "node_modules" in (ROOT / ".gitignore").read_text().splitlines(), "a folder or a link to one"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\basl-check\b", makefile, re.M), "make test runs the check"
    assert "npm ci" in makefile


def test_placeholders_become_the_stages_function_arns_and_bucket():
    text = json.dumps(definition(Parameters={"FunctionName": "${backfill_range}", "Bucket": "${bucket}"}))
    rendered = json.loads(validate_asl.substitute(text, "churnguard", "dev", "churnguard-behaviour-dev"))
    parameters = rendered["States"]["T"]["Parameters"]
    assert parameters["FunctionName"] == "arn:aws:lambda:us-east-1:123456789012:function:churnguard-dev-backfill_range"
    assert parameters["Bucket"] == "churnguard-behaviour-dev"


def test_a_definition_that_is_not_json_or_has_no_states_is_refused():
    with pytest.raises(validate_asl.DefinitionError):
        validate_asl.substitute('{"StartAt": "T", "States": {', "a", "dev", "b")
    with pytest.raises(validate_asl.DefinitionError):
        validate_asl.substitute('{"StartAt": "T"}', "a", "dev", "b")


def test_every_definition_in_infra_is_valid(validator):
    paths = sorted(STATEMACHINES.glob("*.asl.json"))
    assert {p.name for p in paths} >= {"backfill.asl.json", "schedule.asl.json"}
    assert validate_asl.validate(paths, validator, "dev") == []


@pytest.mark.parametrize(
    "broken",
    [
        {"Next": "Nowhere", "End": None},  # a transition to no state
        {"Resource": "${bucket}"},  # a Resource that is not an ARN once filled in
        {"Type": "Tusk"},  # no such state type
    ],
    ids=["missing-target", "resource-not-an-arn", "unknown-type"],
)
def test_a_broken_definition_fails_the_check(tmp_path, broken, validator):
    # GIVEN a definition with one fault
    document = definition(**{k: v for k, v in broken.items() if v is not None})
    if broken.get("End", True) is None:
        document["States"]["T"].pop("End")
    path = tmp_path / "broken.asl.json"
    path.write_text(json.dumps(document))
    # WHEN it is validated THEN it is reported, by file
    (failure,) = validate_asl.validate([path], validator, "dev")
    assert failure.startswith(str(path))
