"""Out-of-time check of the whole training pipeline on several kinds of generated logs and seeds.

For each kind and seed: generate a year of behaviour, train with a cutoff 60 days before its end, then
`evaluate` 30 days later, on behaviour neither the model nor its validation saw, against the baselines
(fitted one horizon before the evaluation cutoff). Prints a Markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    """Run `python -m chalicelib ARGS` and return its stdout."""
    done = subprocess.run([sys.executable, "-m", "chalicelib", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--kinds", nargs="+", default=["multi", "purchases"])
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "validate")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print("| kind | seed | model | AUC | PR-AUC | Brier | recency AUC / Brier | rfm AUC / Brier | bg_nbd AUC / Brier |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for seed in args.seeds:
            events = args.work / f"{kind}-{seed}.csv.gz"
            model = args.work / f"model-{kind}-{seed}"
            run(
                "generate",
                "--users",
                str(args.users),
                "--days",
                "365",
                "--seed",
                str(seed),
                "--kind",
                kind,
                "--as-of",
                "2026-11-01",
                "--out",
                str(events),
            )
            run("train", "--events", str(events), "--cutoff", "2026-09-02", "--horizon-days", "30", "--out", str(model))
            m = json.loads(
                run(
                    "evaluate",
                    "--model",
                    str(model),
                    "--events",
                    str(events),
                    "--cutoff",
                    "2026-10-02",
                    "--horizon-days",
                    "30",
                )
            )
            estimator = json.loads((model / "manifest.json").read_text())["estimator"]
            base = " | ".join(
                f"{m['baselines'][b]['auc']:.4f} / {m['baselines'][b]['brier']:.4f}"
                for b in ("recency", "rfm", "bg_nbd", "pareto_nbd")
            )
            print(
                f"| {kind} | {seed} | {estimator} | {m['auc']:.4f} | {m['pr_auc']:.4f} | {m['brier']:.4f} | {base} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
