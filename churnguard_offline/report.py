"""`report --format html|md|json [--out FILE]`: the latest run report of the configured stage's bucket.

The lift is computed now (with --since, --as-of and --horizon-days, as the command always did); every other
section comes from the aggregates the latest scheduled run stored (reports/latest.json). `json`, the default,
prints the lift report as before, with the stored run report added under `run_report` (null before the first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from chalicelib.errors import InputError
from chalicelib.reporting.render import to_html, to_markdown

FORMATS = ("json", "html", "md")


def render(fmt: str, lift: dict[str, Any], stored: dict[str, Any] | None, where: str) -> str:
    """Return the report in `fmt` from the lift report and the stored run report (None: none yet)."""
    if fmt == "json":
        return json.dumps({**lift, "run_report": stored}, indent=2, default=str) + "\n"
    if stored is None:
        raise InputError(f"no run report in {where} yet: each scheduled run writes one (reports/latest.json)")
    content = {**stored, "lift": lift}
    return to_html(content) if fmt == "html" else to_markdown(content)


def run_report(
    pipeline: Any, fmt: str, out: Path | None, since: float | None, as_of: float | None, horizon_days: float | None
) -> None:
    """Print the report in `fmt`, or write it to `out`, from the bucket of `pipeline` (the configured stage's)."""
    lift = pipeline.lift_report(since, as_of, horizon_days)
    where = pipeline.bucket.url("reports/")
    text = render(fmt, lift, pipeline.bucket.run_report_latest(), where)
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"{out}: run report ({fmt})", file=sys.stderr, flush=True)
