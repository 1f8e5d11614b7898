"""`pip install .` gives a working `churnguard`: the wheel holds the code, the schemas and the pinned model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib import __version__
from tests.conftest import ROOT

# What a build reads: the code, the data it installs, and the files pyproject.toml names.
SOURCES = ("chalicelib", "churnguard_offline", "schemas", "model_artifacts")
BUILD_FILES = ("pyproject.toml", "setup.py", "requirements.txt", "requirements-cli.txt")


def _pins(path: Path) -> dict[str, str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_the_console_scripts_own_requirements_are_pinned_as_the_development_set_pins_them():
    # GIVEN the CLI's requirements beyond the runtime set  THEN each is pinned, to the version development uses
    cli, dev = _pins(ROOT / "requirements-cli.txt"), _pins(ROOT / "requirements-dev.txt")
    assert set(cli) == {"boto3", "tqdm", "matplotlib"}
    assert {name: dev.get(name) for name in cli} == cli


def test_python_m_chalicelib_still_answers_version():
    done = subprocess.run(
        [sys.executable, "-m", "chalicelib", "--version"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == f"churnguard {__version__}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """Return a directory the wheel of this checkout was installed into (--target, without dependencies)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"  # built from a copy: a build writes build/ and *.egg-info beside its sources
    for name in SOURCES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    # No build isolation: it would fetch setuptools from the network; the project's own setuptools builds it.
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(base / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = (base / "dist").glob("churnguard-*.whl")
    target = base / "site"
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True)
    return target


def _churnguard(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script from `cwd`, its packages on the path before this interpreter's own."""
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    env.pop("MODEL_DIR", None)
    return subprocess.run([str(target / "bin" / "churnguard"), *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow  # builds and installs a wheel: left to make test
def test_an_installed_churnguard_answers_version_and_scores_with_its_default_model_from_anywhere(installed, tmp_path):
    # GIVEN the installed package, run from a directory far from the checkout
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import chalicelib; print(chalicelib.__file__)"],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(installed)  # the installed copy, not the checkout
    # WHEN asked for its version  THEN it gives the project's
    version = _churnguard(installed, work, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, f"churnguard {__version__}")
    # WHEN it scores a small file with no --model
    (work / "events.csv").write_text(
        "user_id,event_time,event_type,value\n"
        "u1,2026-05-01,login,\nu1,2026-05-20,purchase,25\nu2,2026-02-01,login,\nu2,2026-03-01,session,12\n"
        "u3,2026-05-30,feature_use,\nu3,2026-05-31,support_ticket,\n"
    )
    done = _churnguard(installed, work, "score", "--allow-missing-signals", "--input", "events.csv", "--out", "s.csv")
    # THEN it used the pinned model it carries, and wrote a row per user
    assert done.returncode == 0, done.stderr
    manifest = json.loads((ROOT / "model_artifacts" / "manifest.json").read_text())
    rows = (work / "s.csv").read_text().splitlines()
    assert len(rows) == 4 and all(row.endswith(manifest["model_version"]) for row in rows[1:])
    assert "s.csv: 3 users scored as of 2026-05-31" in done.stderr
    # AND its errors name it
    bad = _churnguard(installed, work, "score", "--inptu", "x.csv", "--out", "s.csv")
    assert (
        bad.returncode == 2
        and bad.stderr == "churnguard score: error: unknown argument --inptu (did you mean --input?)\n"
    )


@pytest.mark.slow
def test_the_wheel_holds_the_schemas_playbook_and_model_but_no_plots_or_caches(installed):
    (wheel,) = (installed.parent / "dist").glob("churnguard-*.whl")
    files = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "chalicelib/_schemas/retention-message.schema.json",
        "chalicelib/_schemas/playbook.schema.json",
        "chalicelib/retention/playbooks/default.json",
        "chalicelib/_model_artifacts/model.joblib",
        "chalicelib/_model_artifacts/manifest.json",
        "churnguard_offline/cli.py",
    } <= files
    assert not [f for f in files if f.endswith((".png", ".pyc"))]
    assert {f.split("/")[0] for f in files} == {
        "chalicelib",
        "churnguard_offline",
        f"churnguard-{__version__}.dist-info",
    }
    metadata = zipfile.ZipFile(wheel).read(f"churnguard-{__version__}.dist-info/METADATA").decode()
    assert "Requires-Dist: scikit-learn==" in metadata and "Requires-Dist: boto3==" in metadata
    assert "moto" not in metadata and "pytest" not in metadata
    entry_points = zipfile.ZipFile(wheel).read(f"churnguard-{__version__}.dist-info/entry_points.txt").decode()
    assert "churnguard = churnguard_offline.cli:console" in entry_points
