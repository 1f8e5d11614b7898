"""The committed artifact loads, matches its manifest, and a tampered copy is refused."""

from __future__ import annotations

import json
import shutil

import pytest

from chalicelib.errors import ModelArtifactError
from chalicelib.scoring.artifact import MANIFEST_FILE, MODEL_FILE, ModelCache, default_model_dir, load_model, sha256_of
from chalicelib.scoring.features import FEATURE_NAMES
from tests.conftest import ROOT

ARTIFACT = ROOT / "model_artifacts"


def test_committed_artifact_loads_and_matches_its_manifest_sha256():
    manifest = json.loads((ARTIFACT / MANIFEST_FILE).read_text())
    assert sha256_of(ARTIFACT / MODEL_FILE) == manifest["model_sha256"]
    model = load_model(ARTIFACT)
    assert model.manifest["feature_names"] == list(FEATURE_NAMES)
    for key in ("model_version", "created_at", "library_versions", "metrics", "risk_thresholds", "value_thresholds"):
        assert key in model.manifest
    assert (ARTIFACT / "model_card.md").read_text().startswith("# Model card")


def test_tampered_model_is_refused(tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(ARTIFACT, copy)
    with open(copy / MODEL_FILE, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelArtifactError, match="sha256"):
        load_model(copy)


def test_model_built_with_other_scikit_learn_is_refused(tmp_path):
    copy = tmp_path / "artifact"
    shutil.copytree(ARTIFACT, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["library_versions"]["scikit-learn"] = "0.0.1"
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError, match=r"scikit-learn 0\.0\.1"):
        load_model(copy)


def test_model_cache_loads_once_until_cleared():
    cache = ModelCache()
    first = cache.get(ARTIFACT)
    assert cache.get(ARTIFACT) is first
    cache.clear()
    assert cache.get(ARTIFACT) is not first


def test_inside_lambda_a_model_outside_the_deployed_code_is_refused(tmp_path, monkeypatch):
    # GIVEN a Lambda container whose code lives in task_root, and a model copied to a writable place
    task_root = tmp_path / "task"
    shutil.copytree(ARTIFACT, task_root / "chalicelib" / "model_artifacts")
    shutil.copytree(ARTIFACT, tmp_path / "tmp-model")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(task_root))

    # THEN pointing MODEL_DIR at the writable copy is refused, at the packaged one it is not
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "tmp-model"))
    with pytest.raises(ModelArtifactError, match="outside the deployed code"):
        default_model_dir()
    monkeypatch.setenv("MODEL_DIR", str(task_root / "chalicelib" / "model_artifacts"))
    assert default_model_dir() == task_root / "chalicelib" / "model_artifacts"
