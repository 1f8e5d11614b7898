"""The committed model depends only on deployed code: every module its pickle names is a library or in chalicelib/."""

from __future__ import annotations

import importlib
import io
import pickle
import sys

import joblib
import pytest

from tests.conftest import ROOT
from tests.imports import is_within
from tests.package.invoke_packaged import model_globals

MODEL = ROOT / "model_artifacts" / "model.joblib"
# What the model may be built from: the project's deployed code, its model libraries, Python's own modules.
DEPLOYED = ("chalicelib",)
MODEL_LIBRARIES = ("sklearn", "numpy", "scipy", "joblib")
NOT_DEPLOYED = ("churnguard_offline", "tests", "scripts", "app")


def undeployed_modules(found: list[list[str]]) -> list[str]:
    """Return the modules among `found` (module, name) pairs that the Lambda package does not provide."""
    allowed = (*DEPLOYED, *MODEL_LIBRARIES, *sys.stdlib_module_names)
    modules = sorted({module for module, _ in found})
    return [m for m in modules if is_within(m, NOT_DEPLOYED) or not is_within(m, allowed)]


def test_the_committed_model_names_only_deployed_or_library_modules_and_each_imports():
    # GIVEN the committed model  WHEN it is loaded with every global lookup recorded
    found = model_globals(str(MODEL))
    modules = sorted({module for module, _ in found})
    # THEN it needs scikit-learn and numpy, nothing the package leaves out, and every global resolves
    assert any(is_within(m, ["sklearn"]) for m in modules) and any(is_within(m, ["numpy"]) for m in modules)
    assert undeployed_modules(found) == []
    for module, name in found:
        if is_within(module, DEPLOYED):
            assert (ROOT / (module.replace(".", "/") + ".py")).exists() or (ROOT / module.replace(".", "/")).is_dir()
        assert hasattr(importlib.import_module(module), name.split(".")[0]), f"{module}.{name} does not resolve"


class _Planted:
    """A class the test suite defines, which a model must never reference."""


def test_a_model_referencing_an_offline_or_test_module_is_caught(tmp_path):
    # GIVEN a joblib file whose pickle references a class of the test suite and a function of the offline tools
    from churnguard_offline.metrics import classification_metrics

    path = tmp_path / "model.joblib"
    joblib.dump({"estimator": _Planted(), "score": classification_metrics}, path, compress=3)
    # WHEN its globals are recorded THEN both are named, and both are flagged as not deployed
    found = model_globals(str(path))
    assert [__name__, "_Planted"] in found
    assert ["churnguard_offline.metrics", "classification_metrics"] in found
    assert undeployed_modules(found) == ["churnguard_offline.metrics", __name__]


@pytest.mark.parametrize("compress", [0, 3, ("lzma", 3)])
def test_recording_sees_globals_inside_numpy_object_arrays_whatever_the_compression(tmp_path, compress):
    # GIVEN an object array (joblib writes it as a nested pickle stream) holding a planted class
    import numpy as np

    array = np.empty(1, dtype=object)
    array[0] = _Planted()
    path = tmp_path / "model.joblib"
    joblib.dump({"arrays": [array, np.arange(3.0)]}, path, compress=compress)
    # WHEN its globals are recorded THEN the nested one is among them
    assert [__name__, "_Planted"] in model_globals(str(path))
    # AND the recording leaves joblib's unpickler as it was
    assert pickle.load(io.BytesIO(pickle.dumps(1))) == 1
    assert "recording" not in repr(joblib.numpy_pickle.NumpyUnpickler.find_class)
