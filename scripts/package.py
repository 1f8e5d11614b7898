"""Build the Lambda deployment: `chalice package --pkg-format terraform`, model inside, slimmed, size-checked.

Run it with the packaging environment's Python (`make package` builds `.venv-package` with python3.12,
chalice, the runtime requirements and boto3): chalice imports app.py, and the Python that runs chalice
is the Lambda runtime it targets (python3.12, whose manylinux 2_34 wheels of numpy, scipy and
scikit-learn chalice accepts; under 3.11 it finds none and warns "Could not install dependencies").

Steps, each printed with its time:
1. stage the sources: app.py, chalicelib/ (without its entry points into the offline tools), .chalice/,
   requirements.txt, and in vendor/ (which chalice
   puts at the root of the zip) the model artifact and the JSON schemas, checked before anything else;
2. `chalice package` into OUT (deployment.zip + chalice.tf.json);
3. slim the zip: drop test suites, build sources, library sub-packages the functions never import and
   scipy's copies of numpy's own shared libraries, and ship byte code (Lambda's code directory is
   read-only, so a package without it compiles every module on every cold start);
4. patch the generated Terraform (see `patch_terraform`; it adds the state machines and their roles) and put
   infra/*.tf.json, infra/statemachines/ and the stage's terraform.tfvars.json beside it;
5. unzip the result and fail when function plus layers are over the budget (scripts/check_package.py).
"""

from __future__ import annotations

import argparse
import compileall
import filecmp
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The project (the model checks) and this folder (check_package, also run on its own) are importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from check_package import check_package
from pin_model import write_pin

from chalicelib.scoring.artifact import MODEL_FILE, load_model, sha256_of
from chalicelib.scoring.pinned_artifact import MODEL_SHA256
from chalicelib.settings import DEFAULT_FILES_QUEUE

ROOT = Path(__file__).resolve().parent.parent
OWN_CODE = ("app.py", "chalicelib")
# The contract's entry points into the offline tools (`python -m chalicelib`, `chalicelib.bootstrap`): they
# hand over to churnguard_offline, which is not deployed, so they stay out of the zip too.
OFFLINE_ENTRY_POINTS = ("__main__.py", "bootstrap.py")
# What of the model artifact the functions need: the classifier and its manifest (hash, thresholds,
# segments), and the model card for whoever opens the package. The PNG plots stay in the repository.
ARTIFACT_FILES = ("model.joblib", "manifest.json", "model_card.md")
# Test suites of the libraries (about 32 MiB) and their pytest set-up, never imported by the functions.
TEST_DIRS = frozenset({"tests", "test"})
TEST_FILES = frozenset({"conftest.py"})
# Build inputs and typing stubs: read by compilers and type checkers, never by the interpreter.
SOURCE_SUFFIXES = (".pyx", ".pxd", ".pxi", ".pyi", ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".f", ".f90")
# Library sub-packages that neither the handlers nor any model `train` can write import. The package
# test runs both handlers and loads the model from the unzipped package, so a wrong entry fails there.
# Kept on purpose: sklearn.calibration and sklearn.isotonic (a retrained model may be calibrated),
# sklearn.linear_model and sklearn.ensemble (the other candidate classifiers).
UNUSED_PACKAGES = (
    "scipy/io",  # file formats (MATLAB, Matrix Market, NetCDF)
    "scipy/signal",
    "scipy/odr",
    "scipy/cluster",
    "scipy/fftpack",  # legacy; scipy.fft is what scipy itself imports
    "scipy/datasets",
    "scipy/misc",
    "sklearn/cluster",  # k-means runs at training; the activity centres ship as numbers in the manifest
    "sklearn/datasets",
    "sklearn/manifold",
    "sklearn/mixture",
    "sklearn/semi_supervised",
    "sklearn/feature_extraction",
    "sklearn/gaussian_process",
    "sklearn/cross_decomposition",
    "sklearn/neural_network",
    "sklearn/kernel_approximation.py",
    "sklearn/_build_utils",  # used by scikit-learn's own build
    # narwhals lets scikit-learn take other libraries' data frames; the functions pass numpy arrays
    *(f"narwhals/{backend}" for backend in ("_arrow", "_dask", "_duckdb", "_ibis", "_pandas_like", "_polars")),
    *(f"narwhals/{backend}" for backend in ("_spark_like", "_sql")),
    "sklearn/random_projection.py",
    "sklearn/naive_bayes.py",
    "aws_lambda_powertools/event_handler",  # API Gateway / ALB routing; the functions are event-driven
    "numpy/_core/_simd.*.so",  # numpy's SIMD self-test module
)
# Where numpy's wheel vendors its shared libraries, and the wheels' folders that may share them: scipy's package
# imports numpy before any extension of its own loads. (scikit-learn's does not: sklearn/__check_build loads
# first, so its libraries are left alone.)
FIRST_LIBS = "numpy.libs"
SHARING_LIBS = ("scipy.libs",)


# What a build writes into its output directory besides *.tf.json and the zips (infra/ holds the
# hand-written Terraform, a backend configuration included: it is copied in on every build).
GENERATED_FILES = ("terraform.tfvars.json", "package-report.json")
STATE_MACHINE_DIR = "statemachines"


@dataclass(frozen=True)
class StateMachine:
    """What the Terraform of one state machine (infra/statemachines/<name>.asl.json) needs beyond its definition.

    Its workers are the `${handler}` placeholders of its definition; `starters` are the functions whose role may
    start it, `items_prefix` where its Distributed Maps' item lists (and result files) are kept in the bucket.
    """

    starters: tuple[str, ...]
    items_prefix: str


# The scheduled sweep hands a missed file to the file run, which routes a file past one invocation to the
# backfill: so the schedule's function may start both machines, the S3 and queue handlers only the backfill.
STATE_MACHINES = {
    "backfill": StateMachine(
        ("on_behaviour_file", "on_behaviour_queue", "scheduled_scoring", "schedule_plan"), "backfill/"
    ),
    "schedule": StateMachine(("scheduled_scoring",), "map-items/"),
}
# The template variable every definition gets besides its workers' ARNs.
BUCKET_PLACEHOLDER = "bucket"
PLACEHOLDER = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def step(message: str, started: float) -> None:
    """Print one progress line with the seconds since the build started."""
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)


def stage_sources(staging: Path, stage: str) -> None:
    """Copy what chalice packages into `staging`, the model artifact and schemas under vendor/."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(ROOT / "app.py", staging / "app.py")
    shutil.copytree(ROOT / "chalicelib", staging / "chalicelib", ignore=ignore)
    for name in OFFLINE_ENTRY_POINTS:
        (staging / "chalicelib" / name).unlink()
    shutil.copy2(ROOT / "requirements.txt", staging / "requirements.txt")
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    if stage not in config["stages"]:
        raise SystemExit(f".chalice/config.json: no stage {stage!r} (stages: {', '.join(config['stages'])})")
    (staging / ".chalice").mkdir()
    shutil.copy2(ROOT / ".chalice" / "config.json", staging / ".chalice" / "config.json")
    for policy in (ROOT / ".chalice").glob("policy-*.json"):
        shutil.copy2(policy, staging / ".chalice" / policy.name)
    vendor = staging / "vendor"
    (vendor / "model_artifacts").mkdir(parents=True)
    for name in ARTIFACT_FILES:
        shutil.copy2(ROOT / "model_artifacts" / name, vendor / "model_artifacts" / name)
    shutil.copytree(ROOT / "schemas", vendor / "schemas")


def check_artifact(directory: Path) -> str:
    """Load the staged model as the function will (pin, hash, library versions, features); return its version."""
    return load_model(directory, MODEL_SHA256).model_version


def pin_artifact(staging: Path) -> str:
    """Write the staged model's sha256 into the staged code, the one artifact the function will load; return it.

    Only the committed pin is accepted: a model_artifacts/ that differs from it was not pinned by `make model`
    (or by scripts/pin_model.py in a reviewed change), and the build stops instead of trusting it.
    """
    sha256 = sha256_of(staging / "vendor" / "model_artifacts" / MODEL_FILE)
    if sha256 != MODEL_SHA256:
        raise SystemExit(
            f"model_artifacts/{MODEL_FILE} has sha256 {sha256}, not the pinned {MODEL_SHA256}; "
            "pin it with `python scripts/pin_model.py` (make model does) and commit the pin"
        )
    write_pin(staging, sha256)
    return sha256


def run_chalice(staging: Path, stage: str, out: Path) -> None:
    """Run `chalice package` for `stage` into `out`; fail on any dependency it could not install.

    Only what a build writes is replaced in `out`: Terraform's own files there (terraform.tfstate,
    .terraform/, the lock file) survive a rebuild.
    """
    chalice = Path(sys.executable).parent / "chalice"
    generated = out.parent / "chalice-output"
    if generated.exists():
        shutil.rmtree(generated)
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1")}
    done = subprocess.run(
        [str(chalice), "package", "--pkg-format", "terraform", "--stage", stage, str(generated)],
        cwd=staging,
        env=env,
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 or "Could not install" in output:
        raise SystemExit(f"chalice package failed (exit {done.returncode}):\n{output}")
    out.mkdir(parents=True, exist_ok=True)
    written = [out / name for name in GENERATED_FILES if (out / name).exists()]
    for previous in [*out.glob("*.tf.json"), *out.glob("*.zip"), *written]:
        previous.unlink()
    for product in generated.iterdir():
        product.replace(out / product.name)
    generated.rmdir()


def slim(root: Path) -> dict[str, int]:
    """Remove what the functions never load from an unzipped package; return bytes removed by kind."""
    removed = {"test suites": 0, "build sources": 0, "unused sub-packages": 0}
    for pattern in UNUSED_PACKAGES:
        targets = sorted(root.glob(pattern))
        if not targets:
            raise SystemExit(f"slim list names {pattern}, which the package does not hold; update UNUSED_PACKAGES")
        removed["unused sub-packages"] += sum(_remove(target) for target in targets)
    for top in _library_tops(root):
        for path in sorted(top.rglob("*"), reverse=True):
            if not path.exists():
                continue
            if path.name in (TEST_DIRS if path.is_dir() else TEST_FILES):
                removed["test suites"] += _remove(path)
            elif path.is_file() and path.name.endswith(SOURCE_SUFFIXES):
                removed["build sources"] += _remove(path)
    return removed


def strip_extensions(root: Path) -> int:
    """Strip symbol tables from the libraries' extension modules; return bytes saved.

    Each stripped file must still load (dlopen, every symbol bound) or its original is put back. The
    vendored shared libraries in *.libs/ are left alone: auditwheel rewrote them with patchelf, and a
    stripped copy of those fails to load ("ELF load command address/offset not page-aligned").
    """
    strip = shutil.which("strip")
    if strip is None:
        print("  no `strip` on PATH: extension modules keep their symbol tables", flush=True)
        return 0
    modules = [p for top in _library_tops(root) if top.is_dir() for p in sorted(top.rglob("*.so"))]
    before = sum(p.stat().st_size for p in modules)
    for module in modules:
        shutil.copy2(module, module.with_name(module.name + ".orig"))
    subprocess.run([strip, "--strip-unneeded", *map(str, modules)], check=False, capture_output=True)
    probe = (
        "import ctypes, json, sys\n"
        "bad = []\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        ctypes.CDLL(path)\n"
        "    except OSError:\n"
        "        bad.append(path)\n"
        "print(json.dumps(bad))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *map(str, modules)], capture_output=True, text=True)
    failed = set(json.loads(done.stdout)) if done.returncode == 0 else {str(m) for m in modules}
    for module in modules:
        original = module.with_name(module.name + ".orig")
        if str(module) in failed:
            original.replace(module)
        else:
            original.unlink()
    if failed:
        print(f"  {len(failed)} extension module(s) kept unstripped: they did not load once stripped", flush=True)
    return before - sum(p.stat().st_size for p in modules)


def drop_shared_copies(root: Path) -> int:
    """Remove from SHARING_LIBS every file that FIRST_LIBS holds too, same name and same bytes; return bytes saved.

    scipy's wheel ships byte-identical copies of numpy's libgfortran and libquadmath (2.9 MiB). The same bytes
    carry the same soname, and the dynamic loader answers a DT_NEEDED for a soname already loaded with the
    object it has, without opening a file: numpy has loaded its copy by the time scipy's extensions load, so
    scipy's is never opened. The package test loads every extension after `import numpy`, and the handlers'
    tests import the libraries as the functions do. Run after `strip_extensions`, whose probe loads the
    extensions without numpy.
    """
    first = root / FIRST_LIBS
    saved = 0
    for libs in (root / name for name in SHARING_LIBS):
        if not libs.is_dir():
            continue
        for path in sorted(libs.iterdir()):
            twin = first / path.name
            if path.is_file() and twin.is_file() and filecmp.cmp(path, twin, shallow=False):
                saved += _remove(path)
    return saved


def compile_byte_code(root: Path) -> dict[str, int]:
    """Compile every module for the running Python; return file counts.

    The project's own modules keep their source (tracebacks quote it) with byte code beside it in
    __pycache__; library modules are replaced by their byte code, which is what keeps the package
    within budget. Unchecked-hash byte code is used as it is, whatever the timestamps the zip carries.
    """
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    counts = {"own": 0, "library": 0}
    for name in OWN_CODE:
        path = root / name
        if path.is_dir():
            ok = compileall.compile_dir(path, quiet=1, invalidation_mode=mode, workers=0)
        else:
            ok = compileall.compile_file(path, quiet=1, invalidation_mode=mode)
        if not ok:
            raise SystemExit(f"byte-compiling {name} failed")
        counts["own"] += sum(1 for _ in (path.rglob("*.pyc") if path.is_dir() else [path]))
    for top in _library_tops(root):
        sources = [top] if top.is_file() else sorted(top.rglob("*.py"))
        for source in sources:
            if source.suffix != ".py":
                continue
            py_compile.compile(str(source), cfile=str(source) + "c", doraise=True, invalidation_mode=mode)
            source.unlink()
            counts["library"] += 1
    return counts


def rezip(root: Path, zip_path: Path) -> None:
    """Write `root` as a deterministic zip: sorted entries, fixed times, world-readable modes."""
    tmp = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            # Lambda runs the code as another user than the owner: files must be readable by all.
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as fh:
                zf.writestr(info, fh.read())
    tmp.replace(zip_path)


def patch_terraform(document: dict, stage: str) -> dict:
    """Return chalice's Terraform, changed where it cannot deploy this app as generated.

    - The `terraform` block goes: its limits (Terraform < 1.4, AWS provider < 5) refuse every current
      release; infra/versions.tf.json states the versions instead. So does the unused null_data_source.
    - The functions deploy from the S3 object infra/ uploads: the zip is over the 50 MB that Lambda
      accepts as a direct upload. They wait for their log groups, which infra/ creates with a retention.
    - The bucket notification names the bucket infra/ creates, and waits for the permission that lets
      S3 invoke the function (S3 checks it when the notification is written).
    - The schedule's rule carries app and stage in its name, so two stages can share an account.
    - The files queue's event source mapping reports partial batch failures (ReportBatchItemFailures, which
      chalice 1.34 cannot set) and waits for the queue infra/ creates. On a stage whose FILES_DELIVERY is `queue`
      the bucket notification goes to the files queue instead of the function (S3 allows one notification per
      prefix and event type); otherwise to on_behaviour_file, whose failed asynchronous invocations then go to the
      failed-files queue, for the schedule's sweep.
    - The state machines are added once their workers are functions of the app (`add_state_machines`).
    - The risk lookup's REST API is replaced before it is destroyed, as its deployment already is (a redeploy
      never leaves the API without routes).
    """
    patched = json.loads(json.dumps(document))
    patched.pop("terraform", None)
    # Declared by chalice and referenced by nothing; dropping it spares a second provider (null).
    patched.get("data", {}).pop("null_data_source", None)
    resources = patched["resource"]
    for function in resources["aws_lambda_function"].values():
        function.pop("filename", None)
        function["s3_bucket"] = "${aws_s3_object.deployment.bucket}"
        function["s3_key"] = "${aws_s3_object.deployment.key}"
        function["s3_object_version"] = "${aws_s3_object.deployment.version_id}"
        # Its log group (with a retention) must exist before the function first runs and makes its own.
        function["depends_on"] = ["aws_cloudwatch_log_group.lambda"]
    for notification in resources.get("aws_s3_bucket_notification", {}).values():
        notification["bucket"] = "${aws_s3_bucket.behaviour.id}"
        notification["depends_on"] = [
            f"aws_lambda_permission.{name}"
            for name, permission in resources["aws_lambda_permission"].items()
            if permission["principal"] == "s3.amazonaws.com"
        ]
    _patch_files_delivery(resources, stage_environment(stage).get("FILES_DELIVERY", "function"))
    app_name = next(iter(resources["aws_lambda_function"].values()))["tags"]["aws-chalice"].split("app=")[-1]
    for rule_id, rule in resources.get("aws_cloudwatch_event_rule", {}).items():
        rule["name"] = f"{app_name}-{stage}-{rule_id.removesuffix('-event')}"
    add_state_machines(patched, f"{app_name}-{stage}")
    for api in resources.get("aws_api_gateway_rest_api", {}).values():
        api["lifecycle"] = {"create_before_destroy": True}
    return patched


FILE_FUNCTION = "on_behaviour_file"
# Lambda's own limits for an asynchronous event: two retries, kept for up to six hours.
ASYNC_RETRIES, ASYNC_MAX_AGE_SECONDS = 2, 6 * 3600


def stage_environment(stage: str) -> dict:
    """Return the environment the stage's functions get: the app's variables, then the stage's."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    return {**config.get("environment_variables", {}), **config["stages"][stage].get("environment_variables", {})}


def _patch_files_delivery(resources: dict, delivery: str) -> None:
    """Report partial batch failures on the files queue's mapping; point the bucket notification at the stage's
    delivery (the files queue, or the function with an on-failure destination)."""
    if delivery not in ("function", "queue"):
        raise SystemExit(f"FILES_DELIVERY must be function or queue, not {delivery!r}")
    for mapping in resources.get("aws_lambda_event_source_mapping", {}).values():
        mapping["function_response_types"] = ["ReportBatchItemFailures"]
        mapping["depends_on"] = ["aws_sqs_queue.files"]
    if delivery == "function":
        resources["aws_lambda_function_event_invoke_config"] = {
            FILE_FUNCTION: {
                "function_name": f"${{aws_lambda_function.{FILE_FUNCTION}.function_name}}",
                "maximum_retry_attempts": ASYNC_RETRIES,
                "maximum_event_age_in_seconds": ASYNC_MAX_AGE_SECONDS,
                "destination_config": {"on_failure": {"destination": "${aws_sqs_queue.files_failed.arn}"}},
            }
        }
        return
    for notification in resources.get("aws_s3_bucket_notification", {}).values():
        functions = notification.pop("lambda_function", [])
        notification["queue"] = [
            {"queue_arn": "${aws_sqs_queue.files.arn}", **{k: v for k, v in f.items() if k != "lambda_function_arn"}}
            for f in functions
        ]
        # S3 checks, when the notification is written, that the queue's policy lets it send.
        notification["depends_on"] = ["aws_sqs_queue_policy.files"]
    permissions = resources.get("aws_lambda_permission", {})
    for name in [n for n, p in permissions.items() if p["principal"] == "s3.amazonaws.com"]:
        del permissions[name]  # nothing in S3 invokes the function on this stage


# ---- the state machines ------------------------------------------------------------------------------
def add_state_machines(document: dict, prefix: str, definitions: Path | None = None) -> list[str]:
    """Add each state machine whose workers chalice generated; return the machines added, in name order.

    For each: the machine (Standard, logged, traced; its definition the template of its ASL file), its
    log group, its role (invoke exactly its workers, run its own Distributed Map children, read its item
    lists), a grant to start it on each starter's role, and its ARN in every function's environment. The
    ARN is spelled from the name: the definition refers to the functions, so the functions cannot refer to
    the machine.
    """
    definitions = definitions or ROOT / "infra" / STATE_MACHINE_DIR
    functions = document["resource"]["aws_lambda_function"]
    added = []
    for machine, spec in sorted(STATE_MACHINES.items()):
        path = definitions / f"{machine}.asl.json"
        if not path.exists():
            continue
        definition = json.loads(path.read_text())
        workers = sorted(set(PLACEHOLDER.findall(path.read_text())) - {BUCKET_PLACEHOLDER})
        if not workers or any(worker not in functions for worker in workers):
            continue  # its workers are not in this app yet: every run stays in one invocation
        name = f"{prefix}-{machine}"
        resources = document["resource"]
        resources.setdefault("aws_sfn_state_machine", {})[machine] = _state_machine(machine, name, workers)
        resources.setdefault("aws_cloudwatch_log_group", {})[f"{machine}_state_machine"] = _log_group(name)
        resources.setdefault("aws_iam_role", {})[f"{machine}_state_machine"] = _machine_role(machine, name)
        resources.setdefault("aws_iam_role_policy", {})[f"{machine}_state_machine"] = {
            "name": f"{name}-states",
            "role": f"${{aws_iam_role.{machine}_state_machine.id}}",
            "policy": f"${{data.aws_iam_policy_document.{machine}_state_machine.json}}",
        }
        documents = document.setdefault("data", {}).setdefault("aws_iam_policy_document", {})
        documents[f"{machine}_state_machine_trust"] = _machine_trust()
        documents[f"{machine}_state_machine"] = _machine_policy(name, workers, definition, spec.items_prefix)
        for function in functions.values():
            function.setdefault("environment", {}).setdefault("variables", {})[
                f"{machine.upper()}_STATE_MACHINE_ARN"
            ] = _states_arn("stateMachine", name)
        added.append(machine)
    _grant_starts(document, added)
    if added:
        arns = ", ".join(f"{m} = aws_sfn_state_machine.{m}.arn" for m in added)
        document.setdefault("output", {})["state_machine_arns"] = {
            "description": "ARN of each state machine, by the name a run asks for (backfill, schedule).",
            "value": f"${{ {{ {arns} }} }}",
        }
    return added


def _states_arn(kind: str, name: str) -> str:
    """Return the Terraform expression of a Step Functions ARN in this account and region."""
    return (
        "arn:${data.aws_partition.chalice.partition}:states:${data.aws_region.chalice.name}:"
        f"${{data.aws_caller_identity.chalice.account_id}}:{kind}:{name}"
    )


def _state_machine(machine: str, name: str, workers: list[str]) -> dict:
    """Return the aws_sfn_state_machine of `machine`, its definition rendered from its ASL file."""
    variables = ", ".join(
        [f"{worker} = aws_lambda_function.{worker}.arn" for worker in workers]
        + [f"{BUCKET_PLACEHOLDER} = aws_s3_bucket.behaviour.bucket"]
    )
    template = f"${{path.module}}/{STATE_MACHINE_DIR}/{machine}.asl.json"
    return {
        "name": name,
        "type": "STANDARD",
        "role_arn": f"${{aws_iam_role.{machine}_state_machine.arn}}",
        "definition": f'${{templatefile("{template}", {{ {variables} }})}}',
        "logging_configuration": {
            "log_destination": f"${{aws_cloudwatch_log_group.{machine}_state_machine.arn}}:*",
            "include_execution_data": True,
            "level": "ERROR",
        },
        "tracing_configuration": {"enabled": True},
        "tags": "${local.tags}",
        # Step Functions checks at creation that the role may deliver to the log group.
        "depends_on": [f"aws_iam_role_policy.{machine}_state_machine"],
    }


def _log_group(name: str) -> dict:
    """Return the log group of a state machine (under /aws/vendedlogs/, which keeps the logs' resource policy small)."""
    return {
        "name": f"/aws/vendedlogs/states/{name}",
        "retention_in_days": "${var.log_retention_days}",
        "tags": "${local.tags}",
    }


def _machine_role(machine: str, name: str) -> dict:
    """Return the role Step Functions runs the machine with."""
    return {
        "name": f"{name}-states",
        "assume_role_policy": f"${{data.aws_iam_policy_document.{machine}_state_machine_trust.json}}",
        "tags": "${local.tags}",
    }


def _machine_trust() -> dict:
    """Return the trust policy: Step Functions may assume the role, on behalf of this account only."""
    return {
        "statement": {
            "effect": "Allow",
            "actions": ["sts:AssumeRole"],
            "principals": {"type": "Service", "identifiers": ["states.amazonaws.com"]},
            "condition": {
                "test": "StringEquals",
                "variable": "aws:SourceAccount",
                "values": ["${data.aws_caller_identity.chalice.account_id}"],
            },
        }
    }


def _machine_policy(name: str, workers: list[str], definition: dict, items_prefix: str) -> dict:
    """Return the machine role's policy document: its workers, its map children, its item lists, logs, X-Ray."""
    items = f"${{aws_s3_bucket.behaviour.arn}}/{items_prefix}*"
    statements = [
        {
            "sid": "InvokeItsWorkers",
            "actions": ["lambda:InvokeFunction"],
            "resources": [f"${{aws_lambda_function.{worker}.arn}}" for worker in workers],
        },
        {
            "sid": "RunItsDistributedMapChildren",
            "actions": ["states:StartExecution"],
            "resources": [_states_arn("stateMachine", name)],
        },
        {
            "sid": "WatchAndRedriveItsChildren",
            "actions": ["states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"],
            "resources": [_states_arn("execution", f"{name}/*")],
        },
    ]
    readers = {state["ItemReader"]["Resource"] for state in _states(definition) if "ItemReader" in state}
    if "arn:aws:states:::s3:getObject" in readers:
        statements.append({"sid": "ReadItsItemLists", "actions": ["s3:GetObject"], "resources": [items]})
    if "arn:aws:states:::s3:listObjectsV2" in readers:
        statements.append(
            {
                "sid": "ListItsItems",
                "actions": ["s3:ListBucket"],
                "resources": ["${aws_s3_bucket.behaviour.arn}"],
                "condition": {"test": "StringLike", "variable": "s3:prefix", "values": [f"{items_prefix}*"]},
            }
        )
    if any("ResultWriter" in state for state in _states(definition)):
        writes = ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"]
        statements.append({"sid": "WriteItsMapResults", "actions": writes, "resources": [items]})
    # Log delivery and X-Ray take no resource-level permissions: AWS documents "*" for both.
    log_delivery = ["CreateLogDelivery", "GetLogDelivery", "UpdateLogDelivery", "DeleteLogDelivery"]
    log_delivery += ["ListLogDeliveries", "PutResourcePolicy", "DescribeResourcePolicies", "DescribeLogGroups"]
    statements.append({"sid": "DeliverLogs", "actions": [f"logs:{a}" for a in log_delivery], "resources": ["*"]})
    tracing = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    statements.append({"sid": "Trace", "actions": tracing, "resources": ["*"]})
    return {"statement": [{"effect": "Allow", **statement} for statement in statements]}


def _states(definition: dict) -> list[dict]:
    """Return every state of a definition, those inside Map and Parallel states included."""
    found = []
    for state in definition.get("States", {}).values():
        found.append(state)
        for inner in [state.get("ItemProcessor") or state.get("Iterator") or {}, *state.get("Branches", [])]:
            found += _states(inner)
    return found


def _grant_starts(document: dict, machines: list[str]) -> None:
    """Let each starter's role (chalice gives every function its own) start exactly the machines it starts."""
    functions = document["resource"]["aws_lambda_function"]
    for function_name, function in sorted(functions.items()):
        started = [m for m in machines if function_name in STATE_MACHINES[m].starters]
        if not started:
            continue
        role = re.fullmatch(r"\$\{aws_iam_role\.([\w-]+)\.arn\}", function["role"]).group(1)
        document["resource"]["aws_iam_role_policy"][f"{function_name}_starts_executions"] = {
            "name": f"{function_name}-starts-executions",
            "role": f"${{aws_iam_role.{role}.id}}",
            "policy": f"${{data.aws_iam_policy_document.{function_name}_starts_executions.json}}",
        }
        document["data"]["aws_iam_policy_document"][f"{function_name}_starts_executions"] = {
            "statement": {
                "sid": "StartItsStateMachines",
                "effect": "Allow",
                "actions": ["states:StartExecution"],
                "resources": [f"${{aws_sfn_state_machine.{m}.arn}}" for m in started],
            }
        }


def terraform_variables(stage: str, document: dict) -> dict:
    """Return terraform.tfvars.json for `stage`: names from the stage's environment, as the functions see them."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    settings = config["stages"][stage]
    env = {**config.get("environment_variables", {}), **settings.get("environment_variables", {})}
    functions = document["resource"]["aws_lambda_function"].values()
    return {
        "app_name": config["app_name"],
        "stage": stage,
        "behaviour_bucket": env["BEHAVIOUR_BUCKET"],
        "incoming_prefix": env.get("INCOMING_PREFIX", "incoming/"),
        "risk_table": env["RISK_TABLE"],
        "state_table": env.get("STATE_TABLE") or env["RISK_TABLE"],
        "queue_high": env["QUEUE_HIGH"],
        "queue_medium": env["QUEUE_MEDIUM"],
        "queue_account_manager": env.get("QUEUE_ACCOUNT_MANAGER", ""),
        "lambda_timeout_seconds": settings.get("lambda_timeout", config.get("lambda_timeout", 60)),
        "lambda_function_names": sorted(f["function_name"] for f in functions),
        "files_queue": env.get("FILES_QUEUE") or DEFAULT_FILES_QUEUE,
        "files_delivery": env.get("FILES_DELIVERY", "function"),
    }


def write_terraform(out: Path, stage: str) -> None:
    """Patch chalice.tf.json in place; add infra/*.tf.json and terraform.tfvars.json beside it."""
    generated = out / "chalice.tf.json"
    document = json.loads(generated.read_text())
    generated.write_text(json.dumps(patch_terraform(document, stage), indent=2) + "\n")
    for path in sorted((ROOT / "infra").glob("*.tf.json")):
        shutil.copy2(path, out / path.name)
    # The state machines' definitions, which their templatefile() reads from beside the Terraform.
    definitions = out / STATE_MACHINE_DIR
    if definitions.exists():
        shutil.rmtree(definitions)
    shutil.copytree(ROOT / "infra" / STATE_MACHINE_DIR, definitions)
    variables = terraform_variables(stage, document)
    (out / "terraform.tfvars.json").write_text(json.dumps(variables, indent=2) + "\n")


def _library_tops(root: Path) -> list[Path]:
    """Return the top-level packages and modules of the libraries in an unzipped package."""
    own = {*OWN_CODE, "model_artifacts", "schemas"}
    return sorted(
        p
        for p in root.iterdir()
        if p.name not in own and not p.name.endswith((".dist-info", ".libs")) and (p.is_dir() or p.suffix == ".py")
    )


def _remove(path: Path) -> int:
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "package", help="Terraform root to write")
    parser.add_argument("--unzipped", type=Path, default=ROOT / "build" / "lambda", help="where to unzip the result")
    parser.add_argument("--budget-mib", type=float, default=150.0, help="function plus layers, unzipped")
    args = parser.parse_args()
    if sys.version_info[:2] < (3, 12):
        raise SystemExit(f"package with python3.12 or newer (the Lambda runtime); this is {sys.version.split()[0]}")
    started = time.perf_counter()
    out, build = args.out.resolve(), args.out.resolve().parent

    staging = build / "package-src"
    stage_sources(staging, args.stage)
    pinned = pin_artifact(staging)
    version = check_artifact(staging / "vendor" / "model_artifacts")
    step(f"staged sources, model {version} pinned ({pinned[:12]}) and verified (library versions, features)", started)

    run_chalice(staging, args.stage, out)
    zip_path = out / "deployment.zip"
    step(f"chalice package: {zip_path.stat().st_size / 2**20:.1f} MiB zipped", started)

    work = build / "package-work"
    if work.exists():
        shutil.rmtree(work)
    with zipfile.ZipFile(zip_path) as zf:
        before = sum(i.file_size for i in zf.infolist())
        zf.extractall(work)
    removed = slim(work)
    step(
        f"slimmed {before / 2**20:.1f} MiB: "
        + ", ".join(f"{kind} -{size / 2**20:.1f} MiB" for kind, size in removed.items()),
        started,
    )
    saved = strip_extensions(work)
    step(f"stripped extension modules: -{saved / 2**20:.1f} MiB", started)
    shared = drop_shared_copies(work)
    step(f"scipy's copies of {FIRST_LIBS}' shared libraries dropped: -{shared / 2**20:.1f} MiB", started)
    counts = compile_byte_code(work)
    step(f"byte code: {counts['own']} own modules beside their source, {counts['library']} library modules", started)
    rezip(work, zip_path)
    shutil.rmtree(work)
    step(f"deployment.zip rewritten: {zip_path.stat().st_size / 2**20:.1f} MiB zipped", started)

    write_terraform(out, args.stage)
    step(f"Terraform written to {out} (chalice.tf.json patched, infra/*.tf.json, terraform.tfvars.json)", started)

    report = check_package(out, args.unzipped, args.budget_mib)
    report["model_version"] = version
    report["model_sha256"] = pinned
    report["zip_sha256"] = sha256_of(zip_path)
    (out / "package-report.json").write_text(json.dumps(report, indent=2) + "\n")
    step(
        f"unzipped {report['unzipped_bytes'] / 2**20:.1f} MiB (budget {args.budget_mib:g} MiB, "
        f"Lambda's limit 250 MiB) from {report['zipped_bytes'] / 2**20:.1f} MiB zipped",
        started,
    )
    if not report["within_budget"]:
        raise SystemExit(f"package over budget: {report['unzipped_bytes']} bytes > {report['budget_bytes']}")


if __name__ == "__main__":
    main()
