"""Cold start: a fresh Python process imports `app`, loads the model and scores one user. Prints figures.

Each run is a new interpreter, as a new Lambda container is: nothing is cached but the OS page cache.
With --package DIR (an unzipped deployment, `make cold-start`) the process sees only that directory and
its interpreter's own site-packages, with LAMBDA_TASK_ROOT set and no byte code written, as in Lambda,
whose code directory is read-only: whatever the package does not ship compiled is compiled on every start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import os, sys, time, json
if os.environ.get("LAMBDA_TASK_ROOT"):
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
t0 = time.perf_counter()
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
import app  # noqa: F401  (the handlers, chalice and the adapters, as Lambda imports them)
t1 = time.perf_counter()
from chalicelib.scoring.artifact import MODEL_CACHE
model = MODEL_CACHE.get()
t2 = time.perf_counter()
import numpy as np
from chalicelib.scoring.events import EventBatch, TYPE_CODE
from chalicelib.scoring.scorer import Scorer
from chalicelib.scoring.state import build_state
events = EventBatch(["u1"], np.zeros(3, dtype=np.int32), np.array([1.78e9, 1.781e9, 1.782e9]),
                    np.full(3, TYPE_CODE["login"], dtype=np.int8), np.full(3, np.nan))
scores = Scorer(model).score(build_state(events), 1.79e9)
t3 = time.perf_counter()
print(json.dumps({"import_app": t1 - t0, "load_model": t2 - t1, "score_one": t3 - t2, "total": t3 - t0,
                  "tier": str(scores.risk_tier[0])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter to measure with; give one whose environment holds only requirements.txt and boto3 "
        "to see what Lambda sees (dev tools such as pandas, which scikit-learn imports when present, add time)",
    )
    parser.add_argument("--package", type=Path, default=None, help="an unzipped deployment package to measure")
    args = parser.parse_args()
    # Absolute (not resolved: a venv's python is a link whose target would lose the venv), as cwd changes.
    python = str(Path(args.python).absolute()) if os.sep in args.python else args.python
    command, cwd, env = [python, "-c", PROBE], ROOT, None
    if args.package is not None:
        root = args.package.resolve()
        # -I: nothing from the environment or user site; -B: no byte code written (as /var/task is read-only).
        command, cwd = [python, "-I", "-B", "-c", PROBE], root
        env = {**os.environ, "LAMBDA_TASK_ROOT": str(root)}
    runs = []
    for _ in range(args.runs):
        out = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    report = {
        phase: {
            "median_s": round(statistics.median(r[phase] for r in runs), 3),
            "max_s": round(max(r[phase] for r in runs), 3),
        }
        for phase in ("import_app", "load_model", "score_one", "total")
    }
    where = {"package": str(args.package)} if args.package is not None else {}
    print(json.dumps({"runs": args.runs, "python": args.python, **where, **report}, indent=2))


if __name__ == "__main__":
    main()
