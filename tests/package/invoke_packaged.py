"""Run inside a Lambda-like interpreter: the unzipped package first on sys.path, then only boto3.

    python -I invoke_packaged.py ROOT probe            # import app, load the model, score one user
    python -I invoke_packaged.py ROOT invoke < calls   # call handlers as Lambda does: [[name, event], ...]
    python -I invoke_packaged.py ROOT model-globals    # the globals ROOT/model_artifacts/model.joblib names
    python -I invoke_packaged.py ROOT load-libraries   # after numpy, load every shared object of the package

Prints one JSON object on stdout. Not a test module: the packaged code cannot import the test suite.
"""

from __future__ import annotations

import json
import sys
import time
import uuid


class Context:
    """The parts of a Lambda context the handlers read."""

    def __init__(self, name: str, seconds: float = 900.0) -> None:
        self.function_name = f"churnguard-dev-{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 2048
        self._ends = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._ends - time.monotonic()) * 1000)


def _origin(module_name: str) -> str:
    return getattr(sys.modules[module_name], "__file__", "") or ""


def probe() -> dict:
    """Import app, load the model, score one user; say where each library came from."""
    started = time.perf_counter()
    import app  # noqa: F401

    imported = time.perf_counter()
    import numpy as np

    from chalicelib.scoring.artifact import MODEL_CACHE, default_model_dir
    from chalicelib.scoring.events import TYPE_CODE, EventBatch
    from chalicelib.scoring.scorer import Scorer
    from chalicelib.scoring.state import build_state

    model = MODEL_CACHE.get()
    loaded = time.perf_counter()
    events = EventBatch(
        ["u1"],
        np.zeros(3, dtype=np.int32),
        np.array([1.78e9, 1.781e9, 1.782e9]),
        np.full(3, TYPE_CODE["login"], dtype=np.int8),
        np.full(3, np.nan),
    )
    scores = Scorer(model).score(build_state(events), 1.79e9)
    done = time.perf_counter()
    return {
        "model_dir": str(default_model_dir()),
        "model_version": model.model_version,
        "risk_tier": str(scores.risk_tier[0]),
        "churn_probability": float(scores.probability[0]),
        "origins": {name: _origin(name) for name in ("app", "chalicelib", "numpy", "scipy", "sklearn", "joblib")},
        "boto3": _origin("boto3"),
        "seconds": {"import_app": imported - started, "load_model": loaded - imported, "score_one": done - loaded},
    }


def model_globals(path: str) -> list[list[str]]:
    """Load the joblib file at `path`; return the sorted (module, name) of every global its pickle looks up.

    joblib's unpickler (nested object-array streams included) resolves each global through `find_class`,
    whatever the compression; recording there sees exactly what loading the model needs importable.
    """
    import joblib
    from joblib.numpy_pickle import NumpyUnpickler

    seen: set[tuple[str, str]] = set()
    original = NumpyUnpickler.find_class

    def recording(self, module: str, name: str):
        seen.add((module, name))
        return original(self, module, name)

    NumpyUnpickler.find_class = recording
    try:
        joblib.load(path)
    finally:
        NumpyUnpickler.find_class = original
    return sorted([module, name] for module, name in seen)


def model_modules(root: str) -> dict:
    """Return the globals the packaged model names, where each module came from, and the stdlib's names."""
    found = model_globals(f"{root}/model_artifacts/model.joblib")
    modules = sorted({module for module, _ in found})
    return {
        "globals": found,
        "origins": {module: _origin(module) for module in modules},
        "stdlib": sorted(sys.stdlib_module_names),
    }


def load_libraries(root: str) -> dict:
    """Import numpy, as scipy does before any extension of its own loads, then load every extension module and
    vendored shared library of the package; return those that failed to load and the vendored libraries mapped,
    by file name."""
    import ctypes
    from pathlib import Path

    import numpy  # noqa: F401

    failed = []
    tops = [p for p in Path(root).iterdir() if p.is_dir() and not p.name.endswith(".dist-info")]
    for path in sorted(f for top in tops for f in top.rglob("*.so*") if f.is_file()):
        try:
            ctypes.CDLL(str(path))
        except OSError as exc:
            failed.append(f"{path.relative_to(root)}: {exc}")
    mapped: dict[str, set[str]] = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            where = line.split()[-1]
            if where.startswith(root) and ".libs/" in where:
                mapped.setdefault(Path(where).name, set()).add(str(Path(where).relative_to(root)))
    return {"failed": failed, "mapped": {name: sorted(paths) for name, paths in mapped.items()}}


def invoke(calls: list[list]) -> dict:
    """Call each named handler of app.py with its event and a Lambda-like context, in order."""
    import app

    results = []
    for name, event in calls:
        results.append(getattr(app, name)(event, Context(name)))
    return {"results": results}


def main() -> None:
    root, mode = sys.argv[1], sys.argv[2]
    sys.path.insert(0, root)
    if mode == "probe":
        out = probe()
    elif mode == "model-globals":
        out = model_modules(root)
    elif mode == "load-libraries":
        out = load_libraries(root)
    else:
        out = invoke(json.loads(sys.stdin.read()))
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
