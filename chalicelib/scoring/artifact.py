"""The packaged churn model: artifact layout, integrity checks and a per-container cache."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chalicelib.errors import ModelArtifactError
from chalicelib.scoring.features import FEATURE_NAMES
from chalicelib.scoring.model_version import check_model_version
from chalicelib.scoring.pinned_artifact import MODEL_SHA256
from chalicelib.scoring.reasons import WhatIf, replaced, what_if
from chalicelib.scoring.state import LAYOUT_ID

MODEL_FILE = "model.joblib"
MANIFEST_FILE = "manifest.json"
CARD_FILE = "model_card.md"
# Searched when MODEL_DIR is not set: model_artifacts/ beside chalicelib/, which is the repository's top level
# and, in a deployment, the task root (the package build puts the artifact there); else chalicelib/_model_artifacts/,
# where `pip install .` puts it (setup.py).
_DEFAULT_DIRS = (
    Path(__file__).resolve().parents[2] / "model_artifacts",
    Path(__file__).resolve().parents[1] / "_model_artifacts",
)
# Rows a prediction call takes at once. A tree ensemble walks every row once a tree: over a block of a few
# MiB of features the rows stay in the CPU's cache from tree to tree, where over a whole run they come from
# memory each time (74 boosted trees on 92,146 users: 0.31 s in blocks against 0.59 s in one call). A tree's
# probabilities are the same numbers either way; a linear model's dot products go through BLAS, whose rounding
# may differ with the number of rows, by at most a unit in the last place.
PREDICT_ROWS = 8192


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries a pickled model depends on."""
    import joblib
    import sklearn

    return {"scikit-learn": sklearn.__version__, "joblib": joblib.__version__, "numpy": np.__version__}


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> Path:
    """Return MODEL_DIR if set, else the first default directory holding a manifest.

    Inside Lambda only the deployed code's own directory is trusted: loading a joblib file runs pickle,
    so a model in a writable place (/tmp, a mounted file system) would be a way to run code.
    """
    if os.environ.get("MODEL_DIR"):
        chosen = Path(os.environ["MODEL_DIR"])
        task_root = os.environ.get("LAMBDA_TASK_ROOT")
        if task_root and not chosen.resolve().is_relative_to(Path(task_root).resolve()):
            raise ModelArtifactError(f"MODEL_DIR {chosen} is outside the deployed code ({task_root}); refusing to load")
        return chosen
    for candidate in _DEFAULT_DIRS:
        if (candidate / MANIFEST_FILE).exists():
            return candidate
    return _DEFAULT_DIRS[-1]


@dataclass
class ChurnModel:
    """A fitted scikit-learn pipeline with the manifest that describes it."""

    estimator: Any
    manifest: dict[str, Any]

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @property
    def risk_thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.manifest["risk_thresholds"].items()}

    @property
    def horizon_days(self) -> float:
        """The churn horizon the model was trained for: the window a win-back is judged over."""
        return float(self.manifest["training_data"]["horizon_days"])

    @property
    def value_thresholds(self) -> dict[str, Any]:
        return dict(self.manifest["value_thresholds"])

    @property
    def reference(self) -> np.ndarray:
        """Return the typical user's feature vector, used to explain scores."""
        ref = self.manifest["reference_features"]
        return np.array([float(ref[name]) for name in FEATURE_NAMES])

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Return the churn probability of each feature row."""
        return _churn_probability(self.estimator, features)

    def what_if(self, features: np.ndarray) -> WhatIf:
        """Return the model's WhatIf over `features` (reasons.what_if): what `predict_proba` gives for some rows
        with some columns replaced.

        Reason codes ask it once a reason group for the same users. When the estimator is a pipeline led by the
        buy-till-you-die step (as `train` writes it uncalibrated), that step reads three columns; for a group
        that holds none of them, its output for the users as they are stands, so it is computed once for all such
        groups and only the rest of the pipeline runs again. Any other model, and the groups that hold one of the
        three, are predicted whole.
        """
        whole = what_if(features, self.predict_proba)
        lead, rest = _btyd_lead(self.estimator)
        if lead is None:
            return whole
        led: list[np.ndarray] = []

        def predict(rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
            if np.isin(cols, lead.INPUTS).any():
                return whole(rows, cols, values)
            if not led:
                led.append(_in_blocks(lead.transform, features))
            return _churn_probability(rest, replaced(led[0], rows, cols, values))

        return predict


def _in_blocks(step: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Return `step` of `rows`, taken PREDICT_ROWS rows at a time."""
    if rows.shape[0] <= PREDICT_ROWS:
        return step(rows)
    return np.concatenate([step(rows[i : i + PREDICT_ROWS]) for i in range(0, rows.shape[0], PREDICT_ROWS)])


def _churn_probability(estimator: Any, rows: np.ndarray) -> np.ndarray:
    """Return the estimator's probability of the churn class for each row, in blocks."""
    if rows.shape[0] == 0:
        return np.zeros(0)
    return _in_blocks(lambda block: estimator.predict_proba(block)[:, 1], rows)


def _btyd_lead(estimator: Any) -> tuple[Any, Any]:
    """Return (the buy-till-you-die step, the pipeline after it) for a pipeline of two steps or more that starts
    with that step; else (None, None)."""
    from chalicelib.scoring.btyd import BtydFeatures

    steps = getattr(estimator, "steps", None) or []
    if len(steps) < 2 or not isinstance(steps[0][1], BtydFeatures):
        return None, None
    return steps[0][1], estimator[1:]


def load_model(model_dir: str | os.PathLike, pinned: str | None = None) -> ChurnModel:
    """Load and verify an artifact directory; refuse anything that does not match `pinned` or its manifest.

    Loading runs pickle, which runs whatever code the file names: the pin (a sha256 kept outside the
    directory) is what makes an artifact trusted; the manifest's own hash only catches a damaged copy.
    """
    import joblib

    directory = Path(model_dir)
    manifest_path, model_path = directory / MANIFEST_FILE, directory / MODEL_FILE
    if not manifest_path.exists() or not model_path.exists():
        raise ModelArtifactError(f"{directory}: not a model artifact (needs {MANIFEST_FILE} and {MODEL_FILE})")
    actual = sha256_of(model_path)
    if pinned is not None and actual != pinned:
        raise ModelArtifactError(
            f"{model_path}: sha256 {actual} is not the pinned {pinned} (chalicelib/scoring/pinned_artifact.py); "
            "refusing to load"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelArtifactError(f"{manifest_path}: invalid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ModelArtifactError(f"{manifest_path}: not a JSON object")
    if actual != manifest.get("model_sha256"):
        raise ModelArtifactError(f"{model_path}: sha256 {actual} does not match the manifest; refusing to load")
    check_model_version(manifest, str(directory))
    wanted = manifest.get("library_versions", {}).get("scikit-learn")
    have = library_versions()["scikit-learn"]
    if wanted != have:
        raise ModelArtifactError(f"{directory}: built with scikit-learn {wanted}, running {have}; retrain or pin")
    if list(manifest.get("feature_names", [])) != list(FEATURE_NAMES):
        raise ModelArtifactError(f"{directory}: the model's features differ from this code's; retrain")
    if manifest.get("state_layout") != LAYOUT_ID:
        raise ModelArtifactError(f"{directory}: built for state layout {manifest.get('state_layout')}, not {LAYOUT_ID}")
    return ChurnModel(estimator=joblib.load(model_path), manifest=manifest)


class ModelCache:
    """Loads each artifact directory once per process (one Lambda container), refusing any but the pinned one."""

    def __init__(self, pinned: str | None = MODEL_SHA256) -> None:
        self.pinned = pinned
        self._models: dict[str, ChurnModel] = {}
        self._lock = threading.Lock()

    def get(self, model_dir: str | os.PathLike | None = None) -> ChurnModel:
        """Return the model of `model_dir` (default: `default_model_dir()`), loading it once."""
        key = str(Path(model_dir or default_model_dir()).resolve())
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(key, self.pinned)
            return self._models[key]

    def clear(self) -> None:
        """Forget every loaded model (tests, or after a new artifact is swapped in)."""
        with self._lock:
            self._models.clear()


MODEL_CACHE = ModelCache()
