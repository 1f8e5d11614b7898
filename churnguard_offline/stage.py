"""`--stage NAME`: the environment variables of a Chalice stage, read from .chalice/config.json.

Chalice's layout: the top-level `environment_variables`, overlaid by `stages.<name>.environment_variables`. The
stage's values win over the process environment, as they do under `chalice local`, in chalice's test client and in
the deployed function: naming a stage means its bucket, tables and queues, whatever the shell has exported.
Variables the stage does not set (credentials, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`) come from the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chalicelib.errors import InputError

CONFIG = Path(".chalice") / "config.json"
# What AWS answers when the names or the credentials a command was given are wrong: a usage error, not a crash.
CONFIGURATION_CODES = frozenset(
    {
        "NoSuchBucket",
        "ResourceNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)


def add_stage_option(parser: argparse.ArgumentParser) -> None:
    """Add --stage and --project-dir to a command that talks to AWS."""
    parser.add_argument(
        "--stage",
        default=None,
        metavar="NAME",
        help="take the environment variables of this stage from .chalice/config.json, over the process "
        "environment (default: none, the process environment alone)",
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="the directory holding .chalice/config.json, for --stage (default: the current directory)",
    )


def stage_variables(project_dir: Path, stage: str) -> dict[str, str]:
    """Return the environment variables of `stage`; raise InputError naming the file and its stages otherwise."""
    path = project_dir / CONFIG
    config = _config(path)
    stages = config.get("stages")
    if not isinstance(stages, dict) or stage not in stages or not isinstance(stages[stage], dict):
        names = ", ".join(sorted(stages)) if isinstance(stages, dict) and stages else "none"
        raise InputError(f"{path}: no stage {stage!r} (the stages there: {names})")
    merged = {**_variables(path, config, "environment_variables")}
    merged.update(_variables(path, stages[stage], f"stages.{stage}.environment_variables"))
    return merged


def _config(path: Path) -> dict[str, Any]:
    """Return the parsed config file; raise InputError naming it when it is missing or not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (--stage reads the stages from it; see --project-dir)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: not a JSON object")
    return config


def _variables(path: Path, block: dict[str, Any], where: str) -> dict[str, str]:
    """Return one block's environment_variables; raise InputError unless they are strings by name."""
    found = block.get("environment_variables", {})
    if not isinstance(found, dict):
        raise InputError(f"{path}: {where} is not an object")
    bad = [name for name, value in found.items() if not isinstance(value, str)]
    if bad:
        raise InputError(f"{path}: {where}.{bad[0]} is not a string (Chalice sets only strings)")
    return dict(found)


@contextlib.contextmanager
def stage_environment(args: argparse.Namespace) -> Iterator[None]:
    """Run the block with the stage's variables in the environment when --stage names one, restored after."""
    stage = getattr(args, "stage", None)
    if stage is None:
        yield
        return
    variables = stage_variables(args.project_dir, stage)
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def aws_usage_errors(args: argparse.Namespace) -> Iterator[None]:
    """Run a command that talks to AWS (it has --stage), its missing region or credentials and its wrong names
    or permissions raised as InputError: one line, exit 2. Other AWS errors (throttling, faults) stay failures."""
    if not hasattr(args, "stage"):
        yield
        return
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    from chalicelib.aws.boto import error_code

    try:
        yield
    except NoRegionError:
        raise InputError("no AWS region: set AWS_DEFAULT_REGION (or a region in the AWS profile)") from None
    except NoCredentialsError:
        raise InputError("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID and its secret") from None
    except ClientError as exc:
        if error_code(exc) not in CONFIGURATION_CODES:
            raise
        operation = getattr(exc, "operation_name", "a call")
        raise InputError(
            f"AWS refused {operation}: {exc.response['Error'].get('Message', '')} ({error_code(exc)})"
        ) from exc
