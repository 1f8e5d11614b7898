"""Unzip a built deployment and check its size: function plus layers, unzipped, against a budget.

Lambda refuses function code plus layers over 250 MiB unzipped (262,144,000 bytes); the budget
(default 150 MiB) keeps room for growth. Prints a JSON report; exits 1 when over budget.

    python scripts/check_package.py build/package [--unzipped build/lambda] [--budget-mib 150]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_LIMIT_BYTES = 250 * 2**20
MIB = 2**20


def check_package(out: Path, unzipped: Path, budget_mib: float) -> dict:
    """Unzip the function (and any layer zip) in `out` under `unzipped`; return sizes and the verdict."""
    zips = sorted(out.glob("*.zip"))
    if not any(z.name == "deployment.zip" for z in zips):
        raise SystemExit(f"{out}: no deployment.zip; run `make package`")
    if unzipped.exists():
        shutil.rmtree(unzipped)
    sizes: dict[str, dict[str, int]] = {}
    largest: Counter[str] = Counter()
    for path in zips:
        # The function goes to `unzipped` itself; a layer beside it, as Lambda mounts it under /opt.
        target = unzipped if path.name == "deployment.zip" else unzipped.parent / f"{unzipped.name}-{path.stem}"
        if target.exists():
            shutil.rmtree(target)
        with zipfile.ZipFile(path) as zf:
            zf.extractall(target)
        files = [p for p in target.rglob("*") if p.is_file()]
        on_disk = sum(p.stat().st_size for p in files)
        sizes[path.name] = {"zipped_bytes": path.stat().st_size, "unzipped_bytes": on_disk, "files": len(files)}
        for p in files:
            largest[f"{path.name}:{p.relative_to(target).parts[0]}"] += p.stat().st_size
    total = sum(s["unzipped_bytes"] for s in sizes.values())
    budget = int(budget_mib * MIB)
    return {
        "zips": sizes,
        "zipped_bytes": sum(s["zipped_bytes"] for s in sizes.values()),
        "unzipped_bytes": total,
        "budget_bytes": budget,
        "lambda_limit_bytes": LAMBDA_LIMIT_BYTES,
        "within_budget": total <= budget,
        "largest_top_level_mib": {name: round(size / MIB, 1) for name, size in largest.most_common(12)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "build" / "package")
    parser.add_argument("--unzipped", type=Path, default=ROOT / "build" / "lambda")
    parser.add_argument("--budget-mib", type=float, default=150.0)
    args = parser.parse_args()
    report = check_package(args.out, args.unzipped, args.budget_mib)
    print(json.dumps(report, indent=2))
    if not report["within_budget"]:
        print(
            f"over budget: {report['unzipped_bytes'] / MIB:.1f} MiB unzipped > {args.budget_mib:g} MiB",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
