"""The run report's content: every section as plain data, built from a run's totals, which the renderers show.

Stored as JSON beside the HTML (reports/<run_id>.json), so the next run can show the change of the churn drivers
since this one, and `report --format html|md|json` can render it again offline.
"""

from __future__ import annotations

from typing import Any

from chalicelib.reporting.aggregates import HISTOGRAM_BUCKETS, MESSAGES_BY_CHANNEL_ACTION
from chalicelib.reporting.drift import drift_section

REPORT_VERSION = 1
TIERS = ("high", "medium", "low")
# How many quarantined files the data-quality section names (all are counted).
LISTED_QUARANTINED = 20
# File-run statuses that moved the file to quarantine/ (runs/run_metrics.py QUARANTINED) or used none of its rows.
QUARANTINED = ("unreadable", "quarantined")
ALL_REJECTED = "rejected"


def score_buckets(histogram: dict[str, int]) -> list[dict[str, Any]]:
    """Return the 20 buckets of the score histogram, each with its probability range and users."""
    width = 1.0 / HISTOGRAM_BUCKETS
    return [
        {"from": round(b * width, 4), "to": round((b + 1) * width, 4), "users": int(histogram.get(str(b), 0))}
        for b in range(HISTOGRAM_BUCKETS)
    ]


def risk_by_value(cells: dict[str, int]) -> dict[str, dict[str, int]]:
    """Return users per risk tier (rows) and value tier (columns) from "risk/value" counts."""
    out = {risk: dict.fromkeys(TIERS, 0) for risk in TIERS}
    for cell, n in cells.items():
        risk, _, value = cell.partition("/")
        out.setdefault(risk, dict.fromkeys(TIERS, 0))[value] = out.get(risk, {}).get(value, 0) + int(n)
    return out


def ranked(counts: dict[str, int], before: dict[str, int] | None) -> list[dict[str, Any]]:
    """Return reasons by users, most first, each with its share and the change of share since `before`."""
    total = sum(counts.values())
    total_before = sum((before or {}).values())
    out = []
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        share = n / total if total else 0.0
        row: dict[str, Any] = {"reason": reason, "users": int(n), "share": round(share, 4)}
        if before is not None:
            share_before = before.get(reason, 0) / total_before if total_before else 0.0
            row["users_before"] = int(before.get(reason, 0))
            row["share_change"] = round(share - share_before, 4)
        out.append(row)
    for reason in sorted(set(before or {}) - set(counts)):  # a driver that went away is news too
        if before and total_before:
            share_before = before[reason] / total_before
            out.append(
                {
                    "reason": reason,
                    "users": 0,
                    "share": 0.0,
                    "users_before": int(before[reason]),
                    "share_change": round(-share_before, 4),
                }
            )
    return out


def drivers_section(drivers: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    """Return the churn drivers overall, by RFM segment and by activity cluster, with the change since baseline."""
    before = (baseline or {}).get("drivers")
    out: dict[str, Any] = {"previous_run_id": (baseline or {}).get("run_id")}
    out["overall"] = ranked(drivers.get("overall", {}), None if before is None else before.get("overall", {}))
    for part in ("by_rfm_segment", "by_activity_cluster"):
        groups = drivers.get(part, {})
        earlier = None if before is None else before.get(part, {})
        out[part] = {
            name: ranked(groups[name], None if earlier is None else earlier.get(name, {})) for name in sorted(groups)
        }
    return out


def messages_section(summary: dict[str, Any]) -> dict[str, Any]:
    """Return the messages claimed by channel and action, and those each queue accepted."""
    rows = [
        {"channel": channel, "action": action, "messages": int(n)}
        for channel, actions in sorted(summary.get(MESSAGES_BY_CHANNEL_ACTION, {}).items())
        for action, n in sorted(actions.items())
    ]
    return {"by_channel_action": rows, "sent_by_queue": dict(summary.get("messages_sent", {}))}


def suppressed_section(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the users due a message who got none, by reason, most first."""
    counts = summary.get("suppressed", {})
    return [{"reason": k, "users": int(v)} for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def data_quality_section(records: list[dict[str, Any]], not_read: int, since: str | None) -> dict[str, Any]:
    """Return rows rejected by reason and files quarantined over the file runs recorded since `since`."""
    out: dict[str, Any] = {"since": since, "file_runs": len(records), "records_not_read": not_read}
    out.update(rows_read=0, rows_rejected=0, rejected_by_reason={}, files_all_rows_rejected=0)
    quarantined = []
    for record in records:
        rows = record.get("rows", {})
        out["rows_read"] += int(rows.get("read", 0))
        out["rows_rejected"] += int(rows.get("rejected", 0))
        for reason, n in rows.get("rejected_by_reason", {}).items():
            out["rejected_by_reason"][reason] = out["rejected_by_reason"].get(reason, 0) + int(n)
        out["files_all_rows_rejected"] += record.get("status") == ALL_REJECTED
        if record.get("status") in QUARANTINED:
            quarantined.append(
                {
                    "source": str(record.get("source", "")),
                    "status": record["status"],
                    "reason": str(record.get("reason", "")),
                }
            )
    out["files_quarantined"] = len(quarantined)
    out["quarantined"] = sorted(quarantined, key=lambda q: q["source"])[:LISTED_QUARANTINED]
    return out


def build_content(
    summary: dict[str, Any],
    aggregates: dict[str, Any],
    lift: dict[str, Any] | None,
    manifest: dict[str, Any],
    baseline: dict[str, Any] | None,
    data_quality: dict[str, Any],
    generated_at: str,
) -> dict[str, Any]:
    """Return every section of a run's report as plain data."""
    risk = {k: float(v) for k, v in manifest.get("risk_thresholds", {}).items()}
    return {
        "report_version": REPORT_VERSION,
        "run_id": summary.get("run_id"),
        "as_of": summary.get("as_of"),
        "status": summary.get("status"),
        "model_version": summary.get("model_version", manifest.get("model_version")),
        "generated_at": generated_at,
        "users_scored": int(summary.get("users_scored", 0)),
        "score_distribution": {"buckets": score_buckets(aggregates.get("score_histogram", {})), "thresholds": risk},
        "tiers": {
            "risk_x_value": risk_by_value(summary.get("risk_x_value", {})),
            "risk_tier": dict(summary.get("risk_tier", {})),
            "value_tier": dict(summary.get("value_tier", {})),
        },
        "drivers": drivers_section(aggregates.get("drivers", {}), baseline),
        "messages": messages_section(summary),
        "suppressed": suppressed_section(summary),
        "lift": lift,
        "data_quality": data_quality,
        "drift": drift_section(aggregates.get("drift_bins"), manifest.get("training_distribution")),
        # The drivers' counts, which the next run compares its own with, and the baseline this run compared with.
        "drivers_counts": aggregates.get("drivers", {}),
        "compared_with": baseline,
    }
