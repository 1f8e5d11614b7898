"""The run report as one self-contained HTML page (inline SVG charts, no scripts, no outside resources), as Markdown
and as JSON, all from the same content (content.py). Every string from the data is escaped."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html import escape
from typing import Any

from chalicelib.reporting import svg

# Every section of the report, in order: (HTML id, heading). scripts/check_report.py looks for each.
SECTIONS = (
    ("score-distribution", "Score distribution"),
    ("tiers", "Users per risk and value tier"),
    ("drivers", "Churn drivers"),
    ("messages", "Messages by channel and action"),
    ("suppressed", "Suppressed users by reason"),
    ("lift", "Lift per tier and action"),
    ("data-quality", "Data quality"),
    ("drift", "Drift against the training data"),
)
TIERS = ("high", "medium", "low")
TOP_FEATURES = 15  # features drawn in the drift chart (all are in the table)
STYLE = """
*{box-sizing:border-box}body{font-family:sans-serif;margin:0 auto;padding:16px;max-width:960px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;max-width:100%;table-layout:auto}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;overflow-wrap:break-word}
table.wrap td{overflow-wrap:anywhere}th{background:#f4f4f4}td.n{text-align:right;white-space:nowrap}
.flagged{color:#b9770e;font-weight:bold}.alarm{color:#c0392b;font-weight:bold}.ok{color:#1e8449}.note{color:#555;font-size:.9em}section{max-width:100%;overflow-wrap:anywhere}
.groups{display:flex;flex-wrap:wrap;gap:12px}.groups>div{flex:1 1 320px}h4{margin:8px 0 0}
"""


# ---- shared ---------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _pp(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f} pp"


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _lift_rows(lift: dict[str, Any] | None) -> list[list[str]]:
    out = []
    for row in (lift or {}).get("rows", []):
        t, h = row.get("treated", {}), row.get("holdout", {})
        ci = row.get("lift_ci95")
        out.append(
            [
                str(row.get("risk_tier")),
                str(row.get("action")),
                f"{t.get('returned', 0)}/{t.get('returned', 0) + t.get('lost', 0)}, {t.get('pending', 0)} pending",
                _pct(t.get("win_back_rate")),
                f"{h.get('returned', 0)}/{h.get('returned', 0) + h.get('lost', 0)}, {h.get('pending', 0)} pending",
                _pct(h.get("win_back_rate")),
                _pp(row.get("lift")),
                "–" if not ci else f"{_pp(ci[0])} to {_pp(ci[1])}",
            ]
        )
    return out


LIFT_HEAD = ["tier", "action", "treated", "rate", "holdout", "rate", "lift", "95% interval"]


def _driver_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["reason"], str(r["users"]), _pct(r["share"]), _pp(r.get("share_change"))] for r in rows]


DRIVER_HEAD = ["reason", "users", "share", "change since previous run"]
GROUP_HEAD = ["reason", "users", "share", "change"]  # narrower, for the tables side by side


def _drift_rows(drift: dict[str, Any]) -> list[list[str]]:
    rows = [drift["score"], *drift["features"]]
    return [[r["name"], _fmt(r["psi"]), r["status"] if r["psi"] is not None else r.get("why", "")] for r in rows]


def _header_lines(c: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("run", str(c.get("run_id"))),
        ("as of", str(c.get("as_of"))),
        ("status", str(c.get("status"))),
        ("model", str(c.get("model_version"))),
        ("users scored", str(c.get("users_scored"))),
        ("generated", str(c.get("generated_at"))),
    ]


def _data_quality_lines(dq: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [
        ("since", str(dq.get("since") or "the beginning")),
        ("file runs", str(dq.get("file_runs", 0))),
        ("rows read", str(dq.get("rows_read", 0))),
        ("rows rejected", str(dq.get("rows_rejected", 0))),
        ("files with every row rejected", str(dq.get("files_all_rows_rejected", 0))),
        ("files quarantined", str(dq.get("files_quarantined", 0))),
    ]
    if dq.get("records_not_read"):
        lines.append(("run records not read (past the bound)", str(dq["records_not_read"])))
    return lines


# ---- HTML ---------------------------------------------------------------------------------------------------
def _table(head: list[str], rows: list[list[str]], numeric: frozenset[int] = frozenset(), cls: str = "") -> str:
    if not rows:
        return '<p class="note">none</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{escape(v)}</td>' if i in numeric else f"<td>{escape(v)}</td>" for i, v in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _dl(lines: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in lines)
    return f"<table><tbody>{rows}</tbody></table>"


def _html_score(c: dict[str, Any]) -> str:
    dist = c["score_distribution"]
    buckets = dist["buckets"]
    labels = [f"{b['from']:.2f}" for b in buckets]
    marks = [(float(v), f"{k} ≥ {float(v):.2f}") for k, v in sorted(dist["thresholds"].items(), key=lambda kv: kv[1])]
    chart = svg.column_chart([b["users"] for b in buckets], labels, "Users per churn probability bucket", marks)
    note = "20 equal buckets of churn probability; dashed lines: the risk tiers' thresholds."
    return f'{chart}<p class="note">{escape(note)}</p>'


def _html_tiers(c: dict[str, Any]) -> str:
    grid = c["tiers"]["risk_x_value"]
    rows = [[f"risk {r}", *(str(grid.get(r, {}).get(v, 0)) for v in TIERS)] for r in TIERS]
    extra = [[f"risk {r}", *(str(n) for n in grid[r].values())] for r in grid if r not in TIERS]
    return _table(["", *(f"value {v}" for v in TIERS)], rows + extra, frozenset({1, 2, 3}))


def _html_drivers(c: dict[str, Any]) -> str:
    d = c["drivers"]
    before = d.get("previous_run_id")
    parts = [svg.bar_chart([(r["reason"], r["users"]) for r in d["overall"]], "Users at risk by top reason")]
    note = f"compared with run {before}" if before else "no previous run to compare with"
    parts.append(
        f'<p class="note">Each at-risk user counts once, under their most important reason; {escape(note)}.</p>'
    )
    parts.append(_table(DRIVER_HEAD, _driver_rows(d["overall"]), frozenset({1, 2, 3})))
    for key, title in (("by_rfm_segment", "By RFM segment"), ("by_activity_cluster", "By activity cluster")):
        groups = "".join(
            f"<div><h4>{escape(name)}</h4>{_table(GROUP_HEAD, _driver_rows(rows), frozenset({1, 2, 3}))}</div>"
            for name, rows in d[key].items()
        )
        parts.append(f'<h3>{escape(title)}</h3><div class="groups">{groups or "<p class=note>none</p>"}</div>')
    return "".join(parts)


def _html_messages(c: dict[str, Any]) -> str:
    m = c["messages"]
    rows = [[r["channel"], r["action"], str(r["messages"])] for r in m["by_channel_action"]]
    chart = svg.bar_chart(
        [(f"{r['channel']} / {r['action']}", r["messages"]) for r in m["by_channel_action"]],
        "Messages by channel and action",
    )
    queues = [[k, str(v)] for k, v in sorted(m["sent_by_queue"].items())]
    return (
        chart
        + _table(["channel", "action", "messages claimed"], rows, frozenset({2}))
        + "<h3>Accepted by each queue</h3>"
        + _table(["queue", "messages"], queues, frozenset({1}))
    )


def _html_suppressed(c: dict[str, Any]) -> str:
    rows = c["suppressed"]
    chart = svg.bar_chart([(r["reason"], r["users"]) for r in rows], "Suppressed users by reason")
    return chart + _table(["reason", "users"], [[r["reason"], str(r["users"])] for r in rows], frozenset({1}))


def _html_lift(c: dict[str, Any]) -> str:
    lift = c.get("lift") or {}
    note = f"horizon {lift.get('horizon_days')} days, outcomes as of {lift.get('as_of')}" if lift else "no lift report"
    note += "; treated and holdout: users who returned / resolved (returned or lost), and those still pending"
    note += "; lift: the treated win-back rate minus the holdout's"
    return _table(LIFT_HEAD, _lift_rows(lift), frozenset({3, 5, 6})) + f'<p class="note">{escape(note)}.</p>'


def _html_data_quality(c: dict[str, Any]) -> str:
    dq = c["data_quality"]
    reasons = [[k, str(v)] for k, v in sorted(dq.get("rejected_by_reason", {}).items(), key=lambda kv: -kv[1])]
    files = [[q["source"], q["status"], q["reason"]] for q in dq.get("quarantined", [])]
    return (
        _dl(_data_quality_lines(dq))
        + "<h3>Rows rejected by reason</h3>"
        + _table(["reason", "rows"], reasons, frozenset({1}))
        + "<h3>Files quarantined</h3>"
        + _table(["file", "status", "reason"], files, cls="wrap")
    )


def _html_drift(c: dict[str, Any]) -> str:
    drift = c["drift"]
    if not drift.get("available"):
        return f'<p class="note">{escape(drift.get("why", ""))}</p>'
    score = drift["score"]
    scored = [f for f in drift["features"] if f["psi"] is not None][:TOP_FEATURES]
    chart = svg.bar_chart([(f["name"], f["psi"]) for f in scored], "PSI of the features, largest first")
    head = (
        f'<p>Score PSI: <span class="{escape(score["status"])}">{escape(_fmt(score["psi"]))} '
        f"({escape(score['status'])})</span>; flagged at {drift['flag_at']}, alarmed at {drift['alarm_at']}; "
        f"shares floored at {drift['epsilon']}; training rows {escape(_fmt(drift.get('training_rows')))}"
        f"{_compared(drift)}.</p>"
    )
    return head + chart + _table(["distribution", "PSI", "status"], _drift_rows(drift), frozenset({1}))


def _compared(drift: dict[str, Any]) -> str:
    """Return which of the run's users the drift compares, and how many, as a clause of the drift line."""
    users = drift["score"].get("users")
    if drift.get("lookback_days") is None or users is None:
        return ""
    return f"; {escape(_fmt(users))} users seen within {escape(_fmt(drift['lookback_days']))} days compared"


HTML_SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "score-distribution": _html_score,
    "tiers": _html_tiers,
    "drivers": _html_drivers,
    "messages": _html_messages,
    "suppressed": _html_suppressed,
    "lift": _html_lift,
    "data-quality": _html_data_quality,
    "drift": _html_drift,
}


def to_html(content: dict[str, Any]) -> str:
    """Return the report as one self-contained HTML page."""
    title = f"ChurnGuard run report {content.get('run_id')}"
    body = [f"<h1>{escape(title)}</h1>", _dl(_header_lines(content))]
    for sid, heading in SECTIONS:
        body.append(f'<section id="{sid}"><h2>{escape(heading)}</h2>{HTML_SECTIONS[sid](content)}</section>')
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


# ---- Markdown -------------------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def md_escape(text: str) -> str:
    """Return text safe inside a Markdown table cell: markup characters escaped, line breaks as spaces."""
    return _MD_SPECIAL.sub(r"\\\1", text.replace("&", "&amp;")).replace("\r", " ").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["none", ""]
    lines = ["| " + " | ".join(md_escape(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_escape(v) for v in r) + " |" for r in rows]
    return [*lines, ""]


def _md_sections(c: dict[str, Any]) -> dict[str, list[str]]:
    dist = c["score_distribution"]
    d, m, dq, drift = c["drivers"], c["messages"], c["data_quality"], c["drift"]
    grid = c["tiers"]["risk_x_value"]
    thresholds = ", ".join(f"{k} ≥ {float(v):.2f}" for k, v in sorted(dist["thresholds"].items()))
    buckets = [[f"{b['from']:.2f}–{b['to']:.2f}", str(b["users"])] for b in dist["buckets"]]
    tiers = [[f"risk {r}", *(str(grid.get(r, {}).get(v, 0)) for v in TIERS)] for r in TIERS]
    messages = [[r["channel"], r["action"], str(r["messages"])] for r in m["by_channel_action"]]
    reasons = [[k, str(v)] for k, v in dq.get("rejected_by_reason", {}).items()]
    files = [[q["source"], q["status"], q["reason"]] for q in dq.get("quarantined", [])]
    drivers = [f"Compared with run {md_escape(str(d.get('previous_run_id')))}", ""]
    drivers += _md_table(DRIVER_HEAD, _driver_rows(d["overall"]))
    for key, title in (("by_rfm_segment", "By RFM segment"), ("by_activity_cluster", "By activity cluster")):
        for name, rows in d[key].items():
            drivers += [f"**{md_escape(title)}: {md_escape(name)}**", "", *_md_table(DRIVER_HEAD, _driver_rows(rows))]
    quality = _md_table(["", ""], [list(x) for x in _data_quality_lines(dq)])
    quality += _md_table(["reason", "rows"], reasons) + _md_table(["file", "status", "reason"], files)
    if drift.get("available"):
        drifted = _md_table(["distribution", "PSI", "status"], _drift_rows(drift))
    else:
        drifted = [md_escape(drift.get("why", "")), ""]
    return {
        "score-distribution": [
            f"Tier thresholds: {md_escape(thresholds)}",
            "",
            *_md_table(["churn probability", "users"], buckets),
        ],
        "tiers": _md_table(["", *(f"value {v}" for v in TIERS)], tiers),
        "drivers": drivers,
        "messages": _md_table(["channel", "action", "messages claimed"], messages),
        "suppressed": _md_table(["reason", "users"], [[r["reason"], str(r["users"])] for r in c["suppressed"]]),
        "lift": _md_table(LIFT_HEAD, _lift_rows(c.get("lift"))),
        "data-quality": quality,
        "drift": drifted,
    }


def to_markdown(content: dict[str, Any]) -> str:
    """Return the report as Markdown: the same sections as the HTML page, as tables."""
    lines = [f"# ChurnGuard run report {md_escape(str(content.get('run_id')))}", ""]
    lines += _md_table(["", ""], [list(x) for x in _header_lines(content)])
    sections = _md_sections(content)
    for sid, heading in SECTIONS:
        lines += [f"## {heading}", "", *sections[sid]]
    return "\n".join(lines)


def to_json(content: dict[str, Any]) -> str:
    """Return the report's content as indented JSON."""
    return json.dumps(content, indent=2, default=str) + "\n"
