"""Validate every state machine definition in infra/statemachines/ with asl-validator (npm), as `make asl-check` does.

The definitions are Terraform templates: each Task's function is a `${handler}` placeholder and the bucket is
`${bucket}`. asl-validator checks that ARNs look like ARNs, so each file is validated with its placeholders
replaced by what Terraform will put there (a function ARN of the stage, the stage's bucket name), in a
temporary copy; the files themselves are left as they are.

    python scripts/validate_asl.py [--validator node_modules/.bin/asl-validator] [FILE ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "infra" / "statemachines"
VALIDATOR = ROOT / "node_modules" / ".bin" / "asl-validator"
PLACEHOLDER = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
BUCKET_PLACEHOLDER = "bucket"
# What Terraform's templatefile() puts in: any well-formed values serve, the account and region are examples.
EXAMPLE_FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{app}-{stage}-{handler}"


class DefinitionError(ValueError):
    """A definition that is not JSON, or names no state machine at all."""


def substitute(text: str, app: str, stage: str, bucket: str) -> str:
    """Return a definition's text with each placeholder replaced by the value Terraform gives it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        return bucket if name == BUCKET_PLACEHOLDER else EXAMPLE_FUNCTION_ARN.format(app=app, stage=stage, handler=name)

    rendered = PLACEHOLDER.sub(value, text)
    try:
        document = json.loads(rendered)
    except json.JSONDecodeError as exc:
        raise DefinitionError(f"not JSON once its placeholders are filled in: {exc}") from exc
    if not isinstance(document, dict) or "States" not in document:
        raise DefinitionError("no States: not an Amazon States Language definition")
    return rendered


def stage_names(stage: str) -> tuple[str, str]:
    """Return the app name and the stage's behaviour bucket from .chalice/config.json."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    env = {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}
    return config["app_name"], env["BEHAVIOUR_BUCKET"]


def validate(paths: list[Path], validator: Path, stage: str) -> list[str]:
    """Run asl-validator on each definition, placeholders filled in; return one line per failure."""
    app, bucket = stage_names(stage)
    failures = []
    with tempfile.TemporaryDirectory(prefix="asl-") as work:
        for path in paths:
            try:
                rendered = substitute(path.read_text(), app, stage, bucket)
            except DefinitionError as exc:
                failures.append(f"{_shown(path)}: {exc}")
                continue
            copy = Path(work) / path.name
            copy.write_text(rendered)
            done = subprocess.run([str(validator), "--json-path", str(copy)], capture_output=True, text=True)
            if done.returncode != 0:
                failures.append(f"{_shown(path)}: {(done.stdout + done.stderr).strip()}")
    return failures


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", type=Path, nargs="*", help="definitions (default: infra/statemachines/*.asl.json)")
    parser.add_argument("--validator", type=Path, default=VALIDATOR)
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args()
    paths = [p.resolve() for p in args.paths] or sorted(DEFINITIONS.glob("*.asl.json"))
    if not paths:
        raise SystemExit(f"no state machine definitions in {DEFINITIONS}")
    if not args.validator.exists():
        raise SystemExit(f"{args.validator} is missing: run `npm ci` (make asl-check does)")
    failures = validate(paths, args.validator, args.stage)
    if failures:
        sys.stderr.write("\n".join(failures) + "\n")
        raise SystemExit(f"asl-validator: {len(failures)} of {len(paths)} definition(s) invalid")
    print(f"asl-validator: {len(paths)} definition(s) valid: {', '.join(p.name for p in paths)}")


if __name__ == "__main__":
    main()
