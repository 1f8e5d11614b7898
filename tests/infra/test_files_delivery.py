"""The files queue in Terraform: the queue, its dead-letter queue and policy in infra/, and what scripts/package.py
patches into chalice's generated Terraform (partial batch responses, the stage's delivery)."""

from __future__ import annotations

import json
import re

import pytest

import app
from chalicelib.settings import DEFAULTS
from churnguard_offline import bootstrap
from scripts import package
from tests.infra.test_infrastructure import INFRA, read, resolve

QUEUE_ARN = "arn:${data.aws_partition.chalice.partition}:sqs:${data.aws_region.chalice.name}:x:churnguard-files-dev"


def chalice_document() -> dict:
    """Return the parts of what `chalice package --pkg-format terraform` generates that the patch touches."""
    function = {"tags": {"aws-chalice": "version=1.34.0:stage=dev:app=churnguard"}, "filename": "deployment.zip"}
    return {
        "terraform": {"required_version": "> 0.11.0, < 1.4.0"},
        "resource": {
            "aws_lambda_function": {
                name: {**function, "function_name": f"churnguard-dev-{name}"}
                for name in ("on_behaviour_file", "on_behaviour_queue", "scheduled_scoring")
            },
            "aws_lambda_event_source_mapping": {
                "on_behaviour_queue-sqs-event-source": {
                    "event_source_arn": QUEUE_ARN,
                    "batch_size": 10,
                    "maximum_batching_window_in_seconds": 0,
                    "function_name": "${aws_lambda_function.on_behaviour_queue.arn}",
                    "scaling_config": {"maximum_concurrency": 10},
                }
            },
            "aws_s3_bucket_notification": {
                "churnguard-behaviour-dev_notify": {
                    "bucket": "churnguard-behaviour-dev",
                    "lambda_function": [
                        {
                            "lambda_function_arn": "${aws_lambda_function.on_behaviour_file.arn}",
                            "events": ["s3:ObjectCreated:*"],
                            "filter_prefix": "incoming/",
                        }
                    ],
                }
            },
            "aws_lambda_permission": {
                "on_behaviour_file-s3event": {"principal": "s3.amazonaws.com", "source_arn": "arn:aws:s3:::x"}
            },
        },
    }


@pytest.fixture
def delivery(monkeypatch):
    """Set the FILES_DELIVERY the patch reads from the stage's environment."""

    def choose(value: str) -> None:
        real = package.stage_environment
        monkeypatch.setattr(package, "stage_environment", lambda stage: {**real(stage), "FILES_DELIVERY": value})

    return choose


def test_the_files_queue_mapping_reports_partial_batch_failures_under_a_maximum_concurrency(delivery):
    # GIVEN chalice's event source mapping for on_behaviour_queue, which has no FunctionResponseTypes
    delivery("queue")
    # WHEN the build patches it
    patched = package.patch_terraform(chalice_document(), "dev")
    # THEN it reports partial batch failures, keeps its maximum concurrency, and waits for the queue infra/ creates
    (mapping,) = patched["resource"]["aws_lambda_event_source_mapping"].values()
    assert mapping["function_response_types"] == ["ReportBatchItemFailures"]
    assert mapping["scaling_config"] == {"maximum_concurrency": 10} and mapping["depends_on"] == ["aws_sqs_queue.files"]


def test_the_handler_asks_chalice_for_the_batch_size_and_maximum_concurrency_of_the_settings():
    (config,) = [e for e in app.app.event_sources if getattr(e, "name", "") == "on_behaviour_queue"]
    assert config.queue == DEFAULTS["files_queue"] and config.batch_size == DEFAULTS["files_batch_size"] <= 10
    assert 2 <= config.maximum_concurrency == DEFAULTS["files_max_concurrency"] <= 1000


def test_a_queue_stage_sends_its_notifications_to_the_files_queue_and_nothing_in_s3_invokes_the_function(delivery):
    delivery("queue")
    patched = package.patch_terraform(chalice_document(), "dev")["resource"]
    (notification,) = patched["aws_s3_bucket_notification"].values()
    assert "lambda_function" not in notification
    assert notification["queue"] == [
        {"queue_arn": "${aws_sqs_queue.files.arn}", "events": ["s3:ObjectCreated:*"], "filter_prefix": "incoming/"}
    ]
    assert notification["depends_on"] == ["aws_sqs_queue_policy.files"]
    assert patched["aws_lambda_permission"] == {}
    assert "aws_lambda_function_event_invoke_config" not in patched


def test_a_function_stage_keeps_its_trigger_and_sends_failed_invocations_to_the_failed_files_queue(delivery):
    delivery("function")
    patched = package.patch_terraform(chalice_document(), "dev")["resource"]
    (notification,) = patched["aws_s3_bucket_notification"].values()
    assert [f["filter_prefix"] for f in notification["lambda_function"]] == ["incoming/"]
    (config,) = patched["aws_lambda_function_event_invoke_config"].values()
    assert config["function_name"] == "${aws_lambda_function.on_behaviour_file.function_name}"
    assert config["destination_config"] == {"on_failure": {"destination": "${aws_sqs_queue.files_failed.arn}"}}
    assert config["maximum_retry_attempts"] == 2 and config["maximum_event_age_in_seconds"] == 6 * 3600


def test_an_unknown_delivery_stops_the_build(delivery):
    delivery("email")
    with pytest.raises(SystemExit, match="FILES_DELIVERY"):
        package.patch_terraform(chalice_document(), "dev")


def test_the_dev_stage_delivers_through_the_queue_and_the_tfvars_say_so():
    env = package.stage_environment("dev")
    variables = package.terraform_variables("dev", chalice_document())
    assert env["FILES_DELIVERY"] == variables["files_delivery"] == "queue"
    assert variables["files_queue"] == env["FILES_QUEUE"]


def test_the_files_queue_hides_a_message_for_six_function_timeouts_and_dead_letters_it_after_max_receives():
    infra = read(INFRA)
    queues = infra.of_type("aws_sqs_queue")
    files, dead, failed = queues["files"], queues["files_dead_letter"], queues["files_failed"]
    assert resolve(files["visibility_timeout_seconds"], infra) == "${6 * var.lambda_timeout_seconds}"
    assert bootstrap.FILES_VISIBILITY_TIMEOUT_SECONDS == 6 * 900
    redrive = files["redrive_policy"]
    assert "aws_sqs_queue.files_dead_letter.arn" in redrive and "local.max_receive_count" in redrive
    assert '"byQueue"' in dead["redrive_allow_policy"] and "var.files_queue" in dead["redrive_allow_policy"]
    for queue in (files, dead, failed):
        assert queue["sqs_managed_sse_enabled"] is True
        assert queue["message_retention_seconds"] == "${local.message_retention_seconds}"
    assert infra.locals["message_retention_seconds"] == bootstrap.MESSAGE_RETENTION_SECONDS == 14 * 86400


def test_only_the_behaviour_bucket_of_this_account_may_send_to_the_files_queue():
    infra = read(INFRA)
    policy = infra.of_type("aws_sqs_queue_policy")["files"]["policy"]
    assert policy.startswith("${jsonencode(") and "aws_sqs_queue.files.arn" in policy
    assert re.search(r'Service\s*=\s*"s3\.amazonaws\.com"', policy) and '"sqs:SendMessage"' in policy
    assert "aws_s3_bucket.behaviour.arn" in policy and "aws:SourceAccount" in policy


def test_every_file_queue_is_an_output():
    outputs = json.loads((INFRA / "churnguard.tf.json").read_text())["output"]
    assert {"files_queue_url", "files_dead_letter_queue_url", "files_failed_queue_url"} <= set(outputs)
