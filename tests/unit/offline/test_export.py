"""`export`: every user of a tier pair once, in a CSV a spreadsheet cannot run, with progress on the way."""

from __future__ import annotations

import csv
import itertools

from chalicelib.lookup.service import RiskLookup
from churnguard_offline.export import COLUMNS, export_csv
from tests.fakes import FakeRiskReads
from tests.unit.lookup.test_lookup import NOW, item


def test_export_writes_every_user_of_the_pair_once_and_no_other(tmp_path):
    # GIVEN 500 users over the nine tier pairs, read back 7 items a call
    items = [
        item(f"u{i:04d}", ("high", "medium", "low")[i % 3], ("high", "medium", "low")[i // 3 % 3]) for i in range(500)
    ]
    lookup = RiskLookup(FakeRiskReads({i["user_id"]: i for i in items}, page_items=7), clock=lambda: NOW)
    out = tmp_path / "crm.csv"

    # WHEN high/low is exported
    written = export_csv(lookup, "high", "low", out, progress=lambda _line: None)

    # THEN each high/low user is one row, with the contract's score columns and segment, exposure, holdout
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    expected = sorted(i["user_id"] for i in items if (i["risk_tier"], i["value_tier"]) == ("high", "low"))
    assert sorted(r["user_id"] for r in rows) == expected and written == len(expected)
    assert tuple(rows[0]) == COLUMNS
    assert rows[0]["reasons"] == "recency_up;sessions_down" and rows[0]["holdout"] == "false"
    assert not list(tmp_path.glob(".*partial")), "the partial file became the export"


def test_a_cell_a_spreadsheet_would_run_as_a_formula_is_defused(tmp_path):
    # GIVEN users whose ids (and segment) start like formulas
    hostile = ['=HYPERLINK("http://x","y")', "+1-555", "-2+3", "@SUM(A1)", "\tTAB", "<b>plain</b>"]
    items = [item(uid, "high", "high", rfm_segment="=cmd|' /C calc'!A0") for uid in hostile]
    lookup = RiskLookup(FakeRiskReads({i["user_id"]: i for i in items}), clock=lambda: NOW)
    out = tmp_path / "crm.csv"

    export_csv(lookup, "high", "high", out, progress=lambda _line: None)

    # THEN no text cell starts with a formula character; markup is left as text (a CSV is no page)
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    ids = sorted(r["user_id"] for r in rows)
    assert ids == sorted("'" + u if u[0] in "=+-@\t" else u for u in hostile)
    assert all(r["rfm_segment"].startswith("'=") for r in rows)
    assert all(not str(v).startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for v in r.values())
    assert float(rows[0]["churn_probability"]) == 0.8125


def test_a_long_export_reports_progress_with_an_estimate_of_the_time_left(tmp_path):
    items = [item(f"u{i:04d}") for i in range(3000)]
    lookup = RiskLookup(FakeRiskReads({i["user_id"]: i for i in items}), clock=lambda: NOW)
    lines: list[str] = []
    ticks = itertools.count(0, 0.01)  # a clock that moves 10 ms per reading

    export_csv(lookup, "high", "high", tmp_path / "crm.csv", progress=lines.append, clock=lambda: next(ticks))

    assert any("% of the index read" in line and "s left" in line for line in lines[:-1])
    assert lines[-1].startswith("export: 3,000 users written in ")


def test_an_empty_tier_pair_exports_just_the_header(tmp_path):
    lookup = RiskLookup(FakeRiskReads({}), clock=lambda: NOW)
    out = tmp_path / "crm.csv"
    assert export_csv(lookup, "low", "low", out, progress=lambda _line: None) == 0
    assert out.read_text().splitlines() == [",".join(COLUMNS)]
