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


class _Payload:
    """Unpickling this runs code: it writes `marker`, as a malicious model would do anything else."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _malicious_artifact(tmp_path):
    """Return (an artifact whose model.joblib runs code when loaded, with its manifest hash updated, the marker)."""
    import joblib

    copy, marker = tmp_path / "artifact", tmp_path / "payload-ran"
    shutil.copytree(ARTIFACT, copy)
    joblib.dump(_Payload(str(marker)), copy / MODEL_FILE)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["model_sha256"] = sha256_of(copy / MODEL_FILE)
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    return copy, marker


def test_the_pin_in_the_code_matches_the_committed_artifact():
    from chalicelib.scoring.pinned_artifact import MODEL_SHA256

    assert sha256_of(ARTIFACT / MODEL_FILE) == MODEL_SHA256


def test_a_tampered_model_with_its_manifest_updated_is_refused_before_it_is_unpickled(tmp_path, monkeypatch):
    # GIVEN an artifact whose model.joblib runs code when loaded, and whose manifest carries its new sha256
    copy, marker = _malicious_artifact(tmp_path)
    # WHEN the function's model cache is pointed at it
    monkeypatch.setenv("MODEL_DIR", str(copy))
    # THEN it is refused for not being the pinned model, and its payload never ran
    with pytest.raises(ModelArtifactError, match="is not the pinned"):
        ModelCache().get()
    assert not marker.exists()


def test_offline_default_model_is_held_to_the_pin(tmp_path, monkeypatch):
    from churnguard_offline import cli

    copy, marker = _malicious_artifact(tmp_path)
    monkeypatch.setenv("MODEL_DIR", str(copy))
    with pytest.raises(ModelArtifactError, match="is not the pinned"):
        cli._model(None)
    assert not marker.exists()


def test_pin_model_rewrites_only_the_pin(tmp_path):
    from scripts.pin_model import PIN_MODULE, write_pin

    (tmp_path / PIN_MODULE).parent.mkdir(parents=True)
    shutil.copy2(ROOT / PIN_MODULE, tmp_path / PIN_MODULE)
    before = (tmp_path / PIN_MODULE).read_text()
    write_pin(tmp_path, "ab" * 32)
    after = (tmp_path / PIN_MODULE).read_text()
    assert f'MODEL_SHA256 = "{"ab" * 32}"' in after
    assert [line for line in after.splitlines() if "MODEL_SHA256 =" not in line] == [
        line for line in before.splitlines() if "MODEL_SHA256 =" not in line
    ]


def test_the_committed_model_scores_a_long_silent_user_of_any_tenure_as_it_does_at_a_shorter_one():
    import numpy as np

    # GIVEN the typical user, with one to six events in all and silent for 60% of their tenure
    model = load_model(ARTIFACT)
    rows = []
    for tenure in (500.0, 583.0, 650.0, 730.0):  # all within the 730-day retention window the schedule scores
        for events in range(1, 7):
            row = model.reference.copy()
            row[FEATURE_NAMES.index("tenure_days")] = tenure
            row[FEATURE_NAMES.index("log_events_total")] = np.log1p(events)
            row[FEATURE_NAMES.index("recency_days")] = 0.6 * tenure
            rows.append(row)
    # WHEN the model scores them
    probability = model.predict_proba(np.array(rows)).reshape(4, 6)
    # THEN longer tenure and silence never make them look safer: Pareto/NBD's columns stay finite past ~583 days,
    # where they once fell to NaN and these users into the trees' missing-value branch (0.27 instead of 0.86)
    assert np.all(np.isfinite(probability))
    assert np.all(np.diff(probability, axis=0) >= -1e-9)
    assert np.all(probability[1:] >= model.risk_thresholds["high"])


class _RowEcho:
    """An estimator whose churn probability is each row's first feature, and which notes each call's rows."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_proba(self, features):
        import numpy as np

        self.calls.append(features.shape[0])
        return np.column_stack([1.0 - features[:, 0], features[:, 0]])


def test_a_large_run_is_predicted_in_blocks_that_keep_every_row_in_its_place(monkeypatch):
    import numpy as np

    from chalicelib.scoring import artifact

    # GIVEN blocks of 4 rows and an estimator that echoes each row's first feature
    monkeypatch.setattr(artifact, "PREDICT_ROWS", 4)
    echo = _RowEcho()
    model = artifact.ChurnModel(echo, {})
    features = np.arange(27.0).reshape(9, 3) / 27.0
    # WHEN nine rows, then four, then none are predicted
    whole = model.predict_proba(features)
    fits, empty = model.predict_proba(features[:4]), model.predict_proba(features[:0])
    # THEN the nine go in blocks of 4, 4 and 1, each row's probability where its row was; four go at once
    assert echo.calls == [4, 4, 1, 4]
    assert np.array_equal(whole, features[:, 0])
    assert np.array_equal(fits, features[:4, 0])
    assert empty.shape == (0,)


def test_the_committed_model_gives_the_same_probabilities_in_blocks_as_in_one_call():
    import numpy as np

    from chalicelib.scoring.artifact import PREDICT_ROWS

    # GIVEN more users than one block holds: the typical user with recency, tenure and events spread out
    model = load_model(ARTIFACT)
    rng = np.random.default_rng(5)
    n = 2 * PREDICT_ROWS + 123
    rows = np.tile(model.reference, (n, 1))
    rows[:, FEATURE_NAMES.index("tenure_days")] = rng.uniform(1.0, 730.0, n)
    rows[:, FEATURE_NAMES.index("recency_days")] = rows[:, FEATURE_NAMES.index("tenure_days")] * rng.uniform(0, 1, n)
    rows[:, FEATURE_NAMES.index("log_events_total")] = np.log1p(rng.integers(1, 200, n))
    # WHEN they are scored in blocks and in one call of the pipeline itself
    blocks = model.predict_proba(rows)
    one_call = model.estimator.predict_proba(rows)[:, 1]
    # THEN every probability is the same number
    assert np.unique(np.round(one_call, 3)).size > 50
    assert np.array_equal(blocks, one_call)
