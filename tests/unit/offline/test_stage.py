"""--stage NAME: a stage's environment variables from .chalice/config.json, over the process environment."""

from __future__ import annotations

import json
import os

import pytest

from chalicelib.errors import InputError
from churnguard_offline.cli import build_parser, main
from churnguard_offline.stage import stage_environment, stage_variables
from tests.conftest import ROOT

CONFIG = {
    "version": "2.0",
    "environment_variables": {"LOG_LEVEL": "INFO", "BEHAVIOUR_BUCKET": "top-level"},
    "stages": {
        "dev": {"environment_variables": {"BEHAVIOUR_BUCKET": "bucket-dev", "RISK_TABLE": "risk-dev"}},
        "prod": {"environment_variables": {"BEHAVIOUR_BUCKET": "bucket-prod"}},
    },
}


@pytest.fixture
def project(tmp_path):
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(json.dumps(CONFIG))
    return tmp_path


def test_a_stage_is_the_top_level_variables_overlaid_by_its_own(project):
    assert stage_variables(project, "dev") == {
        "LOG_LEVEL": "INFO",
        "BEHAVIOUR_BUCKET": "bucket-dev",
        "RISK_TABLE": "risk-dev",
    }
    assert stage_variables(project, "prod")["BEHAVIOUR_BUCKET"] == "bucket-prod"


def test_the_stage_wins_over_the_process_environment_and_is_undone_after(project, monkeypatch):
    # GIVEN a shell that exported another stage's bucket, and a variable the stage does not set
    monkeypatch.setenv("BEHAVIOUR_BUCKET", "from-the-shell")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    monkeypatch.delenv("RISK_TABLE", raising=False)
    args = build_parser().parse_args(["report", "--stage", "dev", "--project-dir", str(project)])
    # WHEN the command runs under the stage
    with stage_environment(args):
        inside = {k: os.environ.get(k) for k in ("BEHAVIOUR_BUCKET", "RISK_TABLE", "AWS_ENDPOINT_URL")}
    # THEN the stage's values win, what it does not set comes from the environment, and all is restored after
    assert inside == {
        "BEHAVIOUR_BUCKET": "bucket-dev",
        "RISK_TABLE": "risk-dev",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000",
    }
    assert os.environ["BEHAVIOUR_BUCKET"] == "from-the-shell" and "RISK_TABLE" not in os.environ


def test_no_stage_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("BEHAVIOUR_BUCKET", "from-the-shell")
    with stage_environment(build_parser().parse_args(["report"])):
        assert os.environ["BEHAVIOUR_BUCKET"] == "from-the-shell"


def test_an_unknown_stage_is_a_usage_error_naming_the_file_and_its_stages(project, capsys):
    assert main(["report", "--stage", "staging", "--project-dir", str(project)]) == 2
    err = capsys.readouterr().err
    where = project / ".chalice" / "config.json"
    assert err == f"python -m chalicelib report: error: {where}: no stage 'staging' (the stages there: dev, prod)\n"


def test_the_repository_config_has_the_dev_stage():
    assert stage_variables(ROOT, "dev")["BEHAVIOUR_BUCKET"] == "churnguard-behaviour-dev"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (None, "config.json: no such file (--stage reads the stages from it; see --project-dir)"),
        ('{"stages": {"dev": {}},\n "x": }', "config.json:2: not valid JSON"),
        ("[1, 2]", "config.json: not a JSON object"),
        ('{"version": "2.0"}', "config.json: no stage 'dev' (the stages there: none)"),
        ('{"stages": {"dev": {"environment_variables": {"CHUNK_USERS": 10}}}}', "CHUNK_USERS is not a string"),
        (
            '{"stages": {"dev": {"environment_variables": ["A=1"]}}}',
            "stages.dev.environment_variables is not an object",
        ),
    ],
)
def test_a_config_that_cannot_give_the_stage_names_the_file_and_the_problem(tmp_path, text, error):
    if text is not None:
        (tmp_path / ".chalice").mkdir()
        (tmp_path / ".chalice" / "config.json").write_text(text)
    with pytest.raises(InputError) as exc:
        stage_variables(tmp_path, "dev")
    assert str(exc.value).startswith(str(tmp_path / ".chalice")) and error in str(exc.value)


def test_the_commands_that_talk_to_aws_take_a_stage_and_the_offline_ones_do_not():
    parser = build_parser()
    assert parser.parse_args(["replay", "obj-1", "--stage", "dev"]).stage == "dev"
    assert parser.parse_args(["report", "--stage", "dev"]).stage == "dev"
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "--input", "e.csv", "--out", "s.csv", "--stage", "dev"])


def test_a_command_on_aws_without_a_region_is_one_line_exiting_2(monkeypatch, capsys):
    # GIVEN no region anywhere the SDK looks
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    # WHEN a command that talks to AWS runs  THEN it says what is missing, not a traceback
    assert main(["report", "--stage", "dev", "--project-dir", str(ROOT)]) == 2
    assert capsys.readouterr().err == (
        "python -m chalicelib report: error: no AWS region: set AWS_DEFAULT_REGION (or a region in the AWS profile)\n"
    )
