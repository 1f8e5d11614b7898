"""The commands that talk to AWS, on moto: what each asks of the environment, --stage, and replay's answers."""

from __future__ import annotations

import json

from churnguard_offline.cli import main
from tests.integration.conftest import AS_OF, csv_bytes, make_pipeline


def test_report_needs_no_queue_variables(aws, monkeypatch, capsys):
    # GIVEN an environment naming the bucket and tables but no queue (report sends no message)
    monkeypatch.delenv("QUEUE_HIGH")
    monkeypatch.delenv("QUEUE_MEDIUM")
    # WHEN the lift report is asked for  THEN it is printed
    assert main(["report", "--as-of", "2026-07-11"]) == 0
    assert "rows" in json.loads(capsys.readouterr().out)


def test_replay_still_needs_the_queues_it_sends_to(aws, monkeypatch, capsys):
    monkeypatch.delenv("QUEUE_HIGH")
    assert main(["replay", "obj-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "python -m chalicelib replay: error: missing environment variable(s): QUEUE_HIGH"
    )


def test_report_and_replay_read_the_stage_from_the_chalice_config(aws, monkeypatch, capsys):
    # GIVEN a shell that names none of the stage's resources (the aws fixture made them from the dev stage)
    for name in ("BEHAVIOUR_BUCKET", "RISK_TABLE", "STATE_TABLE", "QUEUE_HIGH", "QUEUE_MEDIUM"):
        monkeypatch.delenv(name)
    assert main(["report"]) == 2
    capsys.readouterr()
    # WHEN the commands are given the stage  THEN they find its bucket and tables
    assert main(["report", "--stage", "dev", "--as-of", "2026-07-11"]) == 0
    assert main(["replay", "obj-nothing", "--stage", "dev"]) == 2
    assert "s3://churnguard-behaviour-dev/dead-letter/obj-nothing.json: no run obj-nothing" in capsys.readouterr().err


def test_replay_of_a_finished_run_exits_0_saying_nothing_is_left(aws, population, tmp_path, capsys):
    # GIVEN a run that succeeded
    aws.land("incoming/a.csv", csv_bytes(population, tmp_path))
    summary = make_pipeline(aws.settings).process_object("incoming/a.csv", None, AS_OF.timestamp())
    assert summary["status"] == "succeeded"
    capsys.readouterr()
    # WHEN it is replayed from the command line
    assert main(["replay", summary["run_id"]]) == 0
    # THEN it says so, and its record is unchanged
    captured = capsys.readouterr()
    assert f"run {summary['run_id']} is succeeded: nothing left to replay" in captured.err
    assert json.loads(captured.out)["status"] == "nothing_to_replay"
    assert json.loads(aws.get(f"runs/{summary['run_id']}.json"))["status"] == "succeeded"


def test_a_bucket_that_does_not_exist_is_a_usage_error_naming_what_aws_said(aws, monkeypatch, capsys):
    monkeypatch.setenv("BEHAVIOUR_BUCKET", "churnguard-no-such-bucket")
    assert main(["report"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m chalicelib report: error: AWS refused ") and err.count("\n") == 1
    assert "(NoSuchBucket)" in err or "(AccessDenied)" in err
