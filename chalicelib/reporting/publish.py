"""Write a scheduled run's report to the bucket (reports/<run_id>.html, .json and latest.*) and its drift metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.observability import FEATURE_DRIFT_PSI_MAX, NO_UNIT, SCORE_DRIFT_PSI
from chalicelib.reporting.aggregates import AGGREGATES
from chalicelib.reporting.content import build_content, data_quality_section
from chalicelib.reporting.render import to_html
from chalicelib.scoring.scorer import iso_time

if TYPE_CHECKING:
    from chalicelib.runs.context import RunContext

# The most file-run records one report reads for its data-quality section; past it, it says how many it left.
MAX_FILE_RECORDS = 2000
# The data-quality section covers the file runs recorded in the day before the report (the schedule's period).
DATA_QUALITY_WINDOW_SECONDS = 86400.0


def publish_report(ctx: RunContext, summary: dict[str, Any], lift: dict[str, Any] | None) -> dict[str, Any]:
    """Write the run's report from its summary (whose aggregates move out of it) and lift report; return its content.

    The summary gets the page's address as `run_report`; the aggregates stay in the report's JSON, not the record.
    """
    aggregates = summary.pop(AGGREGATES, None) or {}
    now = ctx.clock()
    baseline = _baseline(ctx.bucket.run_report_latest(), str(summary.get("run_id")))
    since = now - DATA_QUALITY_WINDOW_SECONDS
    records, not_read = ctx.bucket.file_run_records(since, MAX_FILE_RECORDS)
    quality = data_quality_section(records, not_read, iso_time(since))
    manifest = ctx.scorer.model.manifest
    content = build_content(summary, aggregates, lift, manifest, baseline, quality, iso_time(now))
    summary["run_report"] = ctx.bucket.run_report_put(str(summary.get("run_id")), content, to_html(content))
    publish_drift(ctx.metrics, content["drift"])
    return content


def _baseline(latest: dict[str, Any] | None, run_id: str) -> dict[str, Any] | None:
    """Return what the run's churn drivers are compared with: the latest report's, unless that is this run's own
    (a redo), which keeps the baseline it had."""
    if latest is None:
        return None
    if latest.get("run_id") == run_id:
        return latest.get("compared_with")
    return {"run_id": latest.get("run_id"), "drivers": latest.get("drivers_counts", {})}


def publish_drift(metrics: Any, drift: dict[str, Any]) -> None:
    """Add the score's PSI and the worst feature's to the invocation's metrics (none without a distribution)."""
    if not drift.get("available"):
        return
    if drift["score"]["psi"] is not None:
        metrics.add_metric(name=SCORE_DRIFT_PSI, unit=NO_UNIT, value=float(drift["score"]["psi"]))
    if drift.get("worst_feature") is not None:
        metrics.add_metric(name=FEATURE_DRIFT_PSI_MAX, unit=NO_UNIT, value=float(drift["worst_feature"]["psi"]))
