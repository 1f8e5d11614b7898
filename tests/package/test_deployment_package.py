"""The built Lambda package (`make package`): what it holds, its size, and that it runs on its own.

The packaged code runs in a separate python3.12 interpreter (what the Lambda runtime is) whose only
libraries are the package's own plus boto3, as in a Lambda container; nothing of the dev environment leaks
in. `make test` builds the package first and points CHURNGUARD_PACKAGE_DIR and CHURNGUARD_LAMBDA_PYTHON
at it, so these tests fail rather than skip when the build is missing there.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from chalicelib.retention.messages import validate_message
from chalicelib.settings import Settings
from churnguard_offline.bootstrap import ensure_resources
from churnguard_offline.generate import generate_events
from churnguard_offline.lambda_events import scheduled
from tests.conftest import ROOT
from tests.imports import is_within, violations
from tests.integration.conftest import AS_OF, STAGE, STAGE_ENV, Aws, csv_bytes
from tests.unit.test_layout import NOT_DEPLOYED

PROBE = Path(__file__).resolve().parent / "invoke_packaged.py"
MANIFEST = json.loads((ROOT / "model_artifacts" / "manifest.json").read_text())
# Own code in the zip is app.py and chalicelib/; these are the offline tools and what only the repository holds:
# the offline package, the tests, the scripts, and the two entry points that hand over to the offline package.
OWN_CODE = ("app.py", "chalicelib/")
OFFLINE_CODE = (
    "churnguard_offline/",
    "tests/",
    "scripts/",
    *(f"chalicelib/{name}." for name in ("__main__", "bootstrap")),
    *(f"chalicelib/__pycache__/{name}." for name in ("__main__", "bootstrap")),
)
MODEL_LIBRARIES = ("sklearn", "numpy", "scipy", "joblib")
BUDGET_BYTES = 150 * 2**20
LAMBDA_LIMIT_BYTES = 250 * 2**20


def _built(variable: str, default: Path, what: str) -> Path:
    """Return a build product; fail when `make test` named it and it is missing, else skip."""
    named = os.environ.get(variable)
    path = Path(named) if named else default
    if not path.exists():
        if named:
            pytest.fail(f"{variable}={named} does not exist; `make package` should have built it")
        pytest.skip(f"{what} not built: run `make package` (make test does)")
    return path


@pytest.fixture(scope="session")
def package_dir() -> Path:
    return _built("CHURNGUARD_PACKAGE_DIR", ROOT / "build" / "package", "the deployment package")


@pytest.fixture(scope="session")
def lambda_python() -> Path:
    return _built("CHURNGUARD_LAMBDA_PYTHON", ROOT / ".venv-lambda" / "bin" / "python", "the python3.12 + boto3 venv")


@pytest.fixture(scope="session")
def unzipped(package_dir, tmp_path_factory) -> Path:
    """The function's code as Lambda unpacks it into /var/task."""
    root = tmp_path_factory.mktemp("var-task")
    with zipfile.ZipFile(package_dir / "deployment.zip") as zf:
        zf.extractall(root)
    return root


def run_packaged(lambda_python: Path, root: Path, mode: str, env: dict[str, str] | None = None, calls=None) -> dict:
    """Run invoke_packaged.py in an isolated interpreter with `root` as the task root; return its JSON."""
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root.parent),
        "LAMBDA_TASK_ROOT": str(root),
        "AWS_DEFAULT_REGION": "us-east-1",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        # -I: no PYTHON* variables, user site or script directory; -B: /var/task is read-only in Lambda.
        [str(lambda_python), "-I", "-B", str(PROBE), str(root), mode],
        input=json.dumps(calls or []),
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise AssertionError(f"packaged code failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_package_carries_the_committed_model_schemas_and_playbook(package_dir):
    # GIVEN the built deployment zip
    with zipfile.ZipFile(package_dir / "deployment.zip") as zf:
        names = set(zf.namelist())
        model_bytes = zf.read("model_artifacts/model.joblib")
        manifest = json.loads(zf.read("model_artifacts/manifest.json"))
    # THEN the model at the task root is the committed one, byte for byte, with its manifest
    assert hashlib.sha256(model_bytes).hexdigest() == MANIFEST["model_sha256"] == manifest["model_sha256"]
    assert manifest == MANIFEST
    # AND the handlers, the schemas, the playbook and the libraries are there
    for name in ("app.py", "chalicelib/runs/pipeline.py", "chalicelib/retention/playbooks/default.json"):
        assert name in names
    for schema in (ROOT / "schemas").glob("*.json"):
        assert f"schemas/{schema.name}" in names
    assert any(n.startswith("sklearn/") for n in names) and any(n.startswith("numpy.libs/") for n in names)
    # AND neither library test suites nor boto3 (the runtime provides it) take room
    assert not [n for n in names if "/tests/" in n and not n.startswith("chalicelib/")]
    assert not [n for n in names if n.startswith(("boto3/", "botocore/"))]


def own_modules(names: Iterable[str]) -> list[str]:
    """Return the project's own modules among zip entry names: app.py and chalicelib/**, source or byte code."""
    return sorted(n for n in names if n.startswith(OWN_CODE) and n.endswith((".py", ".pyc")))


def offline_entries(names: Iterable[str]) -> list[str]:
    """Return the zip entries that belong to the offline tools, the tests or the scripts (byte code included)."""
    return sorted(n for n in names if n.startswith(OFFLINE_CODE))


def test_offline_entries_catch_the_offline_tools_the_entry_points_and_their_byte_code():
    # GIVEN entry names as a zip that took the offline tools along would hold
    names = [
        "app.py",
        "chalicelib/runs/pipeline.py",
        "chalicelib/__main__.py",
        "chalicelib/__pycache__/__main__.cpython-312.pyc",
        "chalicelib/__pycache__/bootstrap.cpython-312.pyc",
        "chalicelib/bootstrap.py",
        "churnguard_offline/training.py",
        "tests/conftest.py",
        "scripts/package.py",
        "sklearn/tests.pyc",
    ]
    # THEN exactly the offline ones are caught, and the own modules are app.py and chalicelib's
    assert offline_entries(names) == sorted(names[2:9])
    assert own_modules(names) == sorted(names[:6])


def test_package_holds_no_offline_module_and_no_deployed_module_imports_one(package_dir):
    # GIVEN the project's own modules in the zip
    with zipfile.ZipFile(package_dir / "deployment.zip") as zf:
        names = zf.namelist()
        own = own_modules(names)
        sources = {name: zf.read(name).decode() for name in own if name.endswith(".py")}
    assert "app.py" in own and "chalicelib/scoring/artifact.py" in own
    # THEN none is offline: no churnguard_offline, tests or scripts, nor the entry points that hand over to them
    offline = offline_entries(names)
    assert not offline, "offline modules in the deployment zip:\n" + "\n".join(offline)
    # AND every own byte code file has its source beside it, so reading the sources sees all the code
    for cached in (n for n in own if n.endswith(".pyc")):
        package, _, file = cached.rpartition("/__pycache__/")
        assert f"{package}/{file.split('.')[0]}.py" in sources, f"{cached} ships without its source"
    # AND no own module imports the offline tools or a test-only library, at any depth
    found = [v for name, source in sources.items() for v in violations(source, name, NOT_DEPLOYED)]
    assert not found, "deployed modules importing what is not deployed:\n" + "\n".join(map(str, found))


def test_every_module_the_packaged_model_names_is_in_the_package(package_dir, lambda_python, unzipped):
    # WHEN the packaged python loads the packaged model with every global lookup recorded
    out = run_packaged(lambda_python, unzipped, "model-globals")
    modules = sorted(out["origins"])
    with zipfile.ZipFile(package_dir / "deployment.zip") as zf:
        names = set(zf.namelist())
    # THEN it names the project's code, which the zip holds and the package provided
    own = [m for m in modules if is_within(m, ["chalicelib"])]
    assert own, "the committed model pickles chalicelib.scoring.btyd's BTYD features"
    for module in own:
        path = module.replace(".", "/")
        assert f"{path}.py" in names or f"{path}/__init__.py" in names, f"the model needs {module}, not in the zip"
        assert Path(out["origins"][module]).is_relative_to(unzipped), f"{module} came from {out['origins'][module]}"
    # AND otherwise only the model libraries, from the package, and Python's own modules
    allowed = ("chalicelib", *MODEL_LIBRARIES, *out["stdlib"])
    outside = [m for m in modules if not is_within(m, allowed) or is_within(m, ["churnguard_offline", "tests"])]
    assert not outside, f"the packaged model names modules outside the deployed code and its libraries: {outside}"
    for module in (m for m in modules if is_within(m, MODEL_LIBRARIES)):
        assert Path(out["origins"][module]).is_relative_to(unzipped), f"{module} came from {out['origins'][module]}"


def test_unzipped_function_is_within_the_size_budget(package_dir, unzipped):
    # GIVEN the zip as Lambda unpacks it
    on_disk = sum(p.stat().st_size for p in unzipped.rglob("*") if p.is_file())
    with zipfile.ZipFile(package_dir / "deployment.zip") as zf:
        declared = sum(i.file_size for i in zf.infolist())
    report = json.loads((package_dir / "package-report.json").read_text())
    # THEN it is within the 150 MiB budget (Lambda refuses over 250 MiB), and the build reported that size
    assert on_disk == declared == report["unzipped_bytes"]
    assert on_disk <= BUDGET_BYTES < LAMBDA_LIMIT_BYTES
    assert report["within_budget"] is True
    # AND no layer is used, so function plus layers is the function alone
    assert [z.name for z in package_dir.glob("*.zip")] == ["deployment.zip"]


def test_packaged_app_loads_its_own_model_and_libraries_and_scores(lambda_python, unzipped):
    # WHEN a fresh python3.12 with only the package and boto3 imports app, loads the model and scores one user
    out = run_packaged(lambda_python, unzipped, "probe")
    # THEN every library came from the package, boto3 from the runtime, the model from the task root
    for name, origin in out["origins"].items():
        assert Path(origin).is_relative_to(unzipped), f"{name} was imported from {origin}"
    assert not Path(out["boto3"]).is_relative_to(unzipped)
    assert Path(out["model_dir"]) == unzipped / "model_artifacts"
    assert out["model_version"] == MANIFEST["model_version"]
    assert 0.0 <= out["churn_probability"] <= 1.0 and out["risk_tier"] in {"high", "medium", "low"}


def test_other_wheels_copies_of_numpys_shared_libraries_are_dropped_and_only_those(tmp_path):
    from tests.conftest import load_script

    package = load_script("package")
    # GIVEN numpy's vendored libraries, and scipy's: a byte-identical copy of one, a same-named one with other
    # bytes, and one of its own with numpy's bytes under another name
    numpy_libs, scipy_libs = tmp_path / "numpy.libs", tmp_path / "scipy.libs"
    numpy_libs.mkdir(), scipy_libs.mkdir()
    (tmp_path / "scikit_learn.libs").mkdir()
    (tmp_path / "scikit_learn.libs" / "libquadmath-b.so.0").write_bytes(b"quadmath b")
    (numpy_libs / "libgfortran-a.so.5").write_bytes(b"gfortran a" * 100)
    (numpy_libs / "libquadmath-b.so.0").write_bytes(b"quadmath b")
    (scipy_libs / "libgfortran-a.so.5").write_bytes(b"gfortran a" * 100)
    (scipy_libs / "libquadmath-b.so.0").write_bytes(b"quadmath B")
    (scipy_libs / "libgfortran-c.so.5").write_bytes(b"gfortran a" * 100)
    # WHEN the package build drops shared copies
    saved = package.drop_shared_copies(tmp_path)
    # THEN only scipy's identical copy under the same name is gone, numpy's own are all there, and scikit-learn's
    # (which loads an extension before numpy) is kept
    assert saved == 1000
    assert (tmp_path / "scikit_learn.libs" / "libquadmath-b.so.0").exists()
    assert sorted(p.name for p in scipy_libs.iterdir()) == ["libgfortran-c.so.5", "libquadmath-b.so.0"]
    assert sorted(p.name for p in numpy_libs.iterdir()) == ["libgfortran-a.so.5", "libquadmath-b.so.0"]


def test_every_shared_object_of_the_package_loads_after_numpy_and_each_vendored_library_once(lambda_python, unzipped):
    # GIVEN the package, from which other wheels' copies of numpy's own shared libraries were dropped
    numpy_libs = {p.name for p in (unzipped / "numpy.libs").iterdir()}
    others = {p.name for libs in unzipped.glob("*.libs") if libs.name != "numpy.libs" for p in libs.iterdir()}
    assert numpy_libs and not numpy_libs & others
    # WHEN a fresh python3.12 imports numpy, as each library does first, and loads every extension and library
    out = run_packaged(lambda_python, unzipped, "load-libraries")
    # THEN all of them load, scipy's BLAS included (it needs the libgfortran that now only numpy.libs holds),
    # and no vendored library is mapped twice
    assert out["failed"] == []
    assert any(name.startswith("libscipy_openblas-") for name in out["mapped"])
    assert {name: paths for name, paths in out["mapped"].items() if len(paths) > 1} == {}
    assert {name for name in out["mapped"] if name.startswith("libgfortran")} >= {
        name for name in numpy_libs if name.startswith("libgfortran")
    }


def test_packaged_library_code_ships_as_byte_code_for_the_runtime(unzipped, lambda_python):
    # GIVEN the unzipped package
    library_sources = [p for p in unzipped.glob("sklearn/**/*.py")]
    compiled = list(unzipped.glob("sklearn/**/*.pyc"))
    own_cached = list(unzipped.glob("chalicelib/**/__pycache__/*.pyc"))
    # THEN libraries are byte code only, and the project's own modules keep their source beside byte code
    assert not library_sources and compiled
    assert (unzipped / "chalicelib" / "runs" / "pipeline.py").exists() and own_cached
    tag = subprocess.run(
        [str(lambda_python), "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert all(tag in p.name for p in own_cached), f"byte code not built for {tag}"


def test_packaged_app_refuses_a_tampered_model(lambda_python, unzipped, tmp_path):
    # GIVEN a copy of the package whose model.joblib was changed after the manifest was written
    copy = tmp_path / "task"
    shutil.copytree(unzipped, copy, copy_function=os.link)
    model = copy / "model_artifacts" / "model.joblib"
    data = model.read_bytes()
    model.unlink()  # a hard link: replace the file, not the shared bytes
    model.write_bytes(data + b"\x00")
    # WHEN the packaged code loads its model THEN it refuses before unpickling (the pin is checked first)
    with pytest.raises(AssertionError, match=r"is not the pinned .*; refusing to load"):
        run_packaged(lambda_python, copy, "probe")


def test_packaged_app_refuses_a_tampered_model_whose_manifest_was_updated_and_never_runs_it(
    lambda_python, unzipped, tmp_path
):
    # GIVEN a copy of the package whose model.joblib runs code when unpickled, with the manifest's sha256 updated
    copy = tmp_path / "task"
    shutil.copytree(unzipped, copy, copy_function=os.link)
    marker = tmp_path / "payload-ran"
    model, manifest_path = copy / "model_artifacts" / "model.joblib", copy / "model_artifacts" / "manifest.json"
    payload = pickle.dumps(_Payload(str(marker)))
    model.unlink()  # hard links: replace the files, not the shared bytes
    model.write_bytes(payload)
    manifest = json.loads(manifest_path.read_text())
    manifest["model_sha256"] = hashlib.sha256(payload).hexdigest()
    manifest_path.unlink()
    manifest_path.write_text(json.dumps(manifest))
    # WHEN the packaged code loads its model THEN it refuses it against the pin in its code, before unpickling
    with pytest.raises(AssertionError, match="is not the pinned"):
        run_packaged(lambda_python, copy, "probe")
    assert not marker.exists()


class _Payload:
    """Unpickling this runs code: it writes `marker`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_the_package_carries_the_pin_of_its_model(unzipped):
    pin = (unzipped / "chalicelib" / "scoring" / "pinned_artifact.py").read_text()
    assert (
        f'MODEL_SHA256 = "{hashlib.sha256((unzipped / "model_artifacts" / "model.joblib").read_bytes()).hexdigest()}"'
        in pin
    )


def test_packaged_app_refuses_a_model_outside_its_code(lambda_python, unzipped, tmp_path):
    # GIVEN MODEL_DIR pointing at a writable place outside the task root, holding a valid artifact
    outside = tmp_path / "writable"
    shutil.copytree(unzipped / "model_artifacts", outside)
    # WHEN the packaged code loads its model THEN it refuses
    with pytest.raises(AssertionError, match="outside the deployed code"):
        run_packaged(lambda_python, unzipped, "probe", env={"MODEL_DIR": str(outside)})


@pytest.fixture
def moto_server(monkeypatch):
    """An AWS endpoint on loopback, for this process and the packaged code alike."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        **STAGE_ENV,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "SWEEP_MIN_AGE_SECONDS": "0",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("MODEL_DIR", raising=False)
    yield env
    server.stop()


def test_packaged_handlers_score_a_landed_file_and_run_the_schedule(lambda_python, unzipped, moto_server, tmp_path):
    # GIVEN the stage's resources and a behaviour file landed under incoming/
    settings = Settings.from_env()
    ensure_resources(settings)
    aws = Aws(settings)
    events = generate_events(80, 120, 11, AS_OF)
    landed = aws.land("incoming/2026/06/01/export.csv", csv_bytes(events, tmp_path))
    week_later = scheduled((AS_OF + timedelta(days=7)).timestamp())
    # WHEN Lambda calls the packaged handlers: the S3 trigger, then the schedule a week later
    out = run_packaged(
        lambda_python,
        unzipped,
        "invoke",
        env=moto_server,
        calls=[["on_behaviour_file", landed], ["scheduled_scoring", week_later]],
    )
    s3_run, schedule_run = out["results"][0][0], out["results"][1]
    # THEN the file's users were merged and scored, and the schedule re-scored them a week on
    users = set(events.user_ids[i] for i in set(events.user_index.tolist()))
    assert s3_run["rows"]["scored"] == len(events) and s3_run["rows"]["rejected"] == 0
    risk = {item["user_id"]: item for item in aws.items(settings.risk_table)}
    assert set(risk) == users
    assert {item["model_version"] for item in risk.values()} == {MANIFEST["model_version"]}
    # (a re-score that changes nothing a consumer reads leaves the stored item as it was, counted as skipped)
    rescored = {uid for uid, item in risk.items() if item["as_of"] == week_later["time"]}
    assert len(users - rescored) == schedule_run.get("risk_writes_skipped", 0) < len(users)
    assert s3_run["users_scored"] == schedule_run["users_scored"] == len(users)
    # AND the retention messages on the tier queues are valid against the published schema
    messages = aws.drain_all()
    assert messages, "some users of a generated population are at risk"
    for message in messages:
        validate_message(message)
        assert message["model_version"] == MANIFEST["model_version"]


def _assert_deploys_the_uploaded_zip(function: dict) -> None:
    """Assert a generated function deploys the uploaded object's version, on python3.12, after its log group."""
    assert "filename" not in function
    assert function["s3_key"] == "${aws_s3_object.deployment.key}"
    assert function["s3_object_version"] == "${aws_s3_object.deployment.version_id}"
    assert function["runtime"] == "python3.12"
    assert function["depends_on"] == ["aws_cloudwatch_log_group.lambda"]
    assert function["environment"]["variables"]["BEHAVIOUR_BUCKET"] == STAGE_ENV["BEHAVIOUR_BUCKET"]


def _assert_stage_variables(variables: dict, functions: dict) -> None:
    """Assert terraform.tfvars.json names the stage's bucket, tables, queues, timeout and functions."""
    assert variables["behaviour_bucket"] == STAGE_ENV["BEHAVIOUR_BUCKET"]
    assert variables["risk_table"] == STAGE_ENV["RISK_TABLE"]
    assert variables["state_table"] == STAGE_ENV["STATE_TABLE"]
    assert [variables["queue_high"], variables["queue_medium"]] == [STAGE_ENV["QUEUE_HIGH"], STAGE_ENV["QUEUE_MEDIUM"]]
    assert variables["lambda_timeout_seconds"] == STAGE["lambda_timeout"]
    assert variables["lambda_function_names"] == sorted(f["function_name"] for f in functions.values())


def test_generated_terraform_deploys_the_zip_from_s3_for_this_stage(package_dir):
    # GIVEN the Terraform the build wrote beside the zip
    generated = json.loads((package_dir / "chalice.tf.json").read_text())
    variables = json.loads((package_dir / "terraform.tfvars.json").read_text())
    functions = generated["resource"]["aws_lambda_function"]
    # THEN every function deploys from the uploaded object (the zip is over the 50 MB direct upload)
    handlers = ["on_behaviour_file", "on_behaviour_queue", "scheduled_scoring", "api_handler"]
    workers = [f"backfill_{step}" for step in ("finish", "range", "shard", "split")]
    workers += [f"schedule_{step}" for step in ("finish", "plan", "segment")]
    assert sorted(functions) == sorted(handlers + workers)
    for function in functions.values():
        _assert_deploys_the_uploaded_zip(function)
    # AND the notification (to the files queue on this stage) waits for the queue's policy; the versions are infra's
    (notification,) = generated["resource"]["aws_s3_bucket_notification"].values()
    assert notification["bucket"] == "${aws_s3_bucket.behaviour.id}"
    assert notification["depends_on"] == ["aws_sqs_queue_policy.files"]
    assert "terraform" not in generated
    # AND the stage's names reach the infrastructure as variables, the same the functions read
    _assert_stage_variables(variables, functions)
    (rule,) = generated["resource"]["aws_cloudwatch_event_rule"].values()
    assert rule["name"] == "churnguard-dev-scheduled_scoring"
    # AND the risk lookup's API is replaced before it is destroyed, its function on a role of its own
    (api,) = generated["resource"]["aws_api_gateway_rest_api"].values()
    assert api["lifecycle"] == {"create_before_destroy": True}
    assert functions["api_handler"]["role"] == "${aws_iam_role.api_handler_role.arn}"
    policy = json.loads(generated["resource"]["aws_iam_role_policy"]["api_handler_role"]["policy"])
    assert {a for s in policy["Statement"] for a in s["Action"] if not a.startswith("logs:")} == {
        "dynamodb:GetItem",
        "dynamodb:Query",
    }
