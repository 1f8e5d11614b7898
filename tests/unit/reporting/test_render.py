"""The report's HTML, Markdown and JSON: every section there, every string from the data escaped."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from chalicelib.reporting.content import build_content, data_quality_section, ranked, risk_by_value
from chalicelib.reporting.render import SECTIONS, md_escape, to_html, to_json, to_markdown

HOSTILE = '<img src=x onerror="alert(1)">|**bold**'


class Tags(HTMLParser):
    """Counts the elements of a page and the ids and scripts in it."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id"]


def hostile_content() -> dict:
    """Return a report whose every name from the data (segments, reasons, channels, files) is markup."""
    summary = {
        "run_id": HOSTILE,
        "as_of": "2026-06-01T00:00:00Z",
        "status": "succeeded",
        "users_scored": 3,
        "risk_x_value": {f"high/{HOSTILE}": 1, "low/low": 2},
        "suppressed": {HOSTILE: 2},
        "messages_sent": {HOSTILE: 1},
        "messages_by_channel_action": {HOSTILE: {HOSTILE: 1}},
    }
    aggregates = {
        "score_histogram": {"0": 2, "19": 1},
        "drivers": {
            "overall": {HOSTILE: 2},
            "by_rfm_segment": {HOSTILE: {HOSTILE: 2}},
            "by_activity_cluster": {"low": {HOSTILE: 2}},
        },
        "drift_bins": {"score": {"0": 3}, "features": {HOSTILE: {"1": 3}}},
    }
    manifest = {
        "risk_thresholds": {"high": 0.6, "medium": 0.25},
        "model_version": "m1",
        "training_distribution": {
            "rows": 10,
            "score": {"edges": [0.5], "proportions": [0.5, 0.5]},
            "features": {HOSTILE: {"edges": [1.0], "proportions": [0.9, 0.1]}},
        },
    }
    lift = {"horizon_days": 30, "as_of": "x", "rows": [{"risk_tier": HOSTILE, "action": HOSTILE, "lift": None}]}
    records = [{"rows": {"read": 5, "rejected": 2, "rejected_by_reason": {HOSTILE: 2}}, "status": "succeeded"}]
    records.append({"status": "unreadable", "source": f"s3://b/incoming/{HOSTILE}", "reason": HOSTILE})
    quality = data_quality_section(records, 0, "2026-05-31T00:00:00Z")
    baseline = {"run_id": HOSTILE, "drivers": {"overall": {HOSTILE: 1}}}
    return build_content(summary, aggregates, lift, manifest, baseline, quality, "2026-06-01T00:00:01Z")


def test_every_section_is_in_the_page_in_order_with_no_script():
    page = to_html(hostile_content())
    tags = Tags()
    tags.feed(page)
    assert [i for i in tags.ids if i in dict(SECTIONS)] == [sid for sid, _ in SECTIONS]
    assert "script" not in tags.tags and tags.tags.count("svg") >= 4
    # AND the page is self-contained: nothing loaded from anywhere
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in page


def test_markup_in_any_name_from_the_data_is_escaped_in_the_page():
    page = to_html(hostile_content())
    # THEN no element comes from the data: the only <img is none at all, and the text is there escaped
    tags = Tags()
    tags.feed(page)
    assert "img" not in tags.tags
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_markup_in_any_name_is_escaped_in_the_markdown():
    text = to_markdown(hostile_content())
    # THEN every markup character from the data is backslash-escaped (no bare "<" or "|" of its own)
    assert not re.search(r"(?<!\\)<img", text) and "**bold**" not in text
    assert '\\<img src=x onerror="alert\\(1\\)"\\>\\|\\*\\*bold\\*\\*' in text
    # AND every section has its heading
    for _, heading in SECTIONS:
        assert f"## {heading}" in text


def test_md_escape_keeps_a_table_row_one_row():
    assert md_escape("a|b\nc") == "a\\|b c"


def test_the_json_is_the_content_itself():
    content = hostile_content()
    assert json.loads(to_json(content)) == json.loads(json.dumps(content))


def test_the_sections_hold_what_the_run_counted():
    c = hostile_content()
    assert [b["users"] for b in c["score_distribution"]["buckets"]][::19] == [2, 1]
    assert len(c["score_distribution"]["buckets"]) == 20 and c["score_distribution"]["thresholds"]["high"] == 0.6
    assert c["data_quality"]["rows_rejected"] == 2 and c["data_quality"]["files_quarantined"] == 1
    assert c["drift"]["worst_feature"]["name"] == HOSTILE
    assert c["drivers"]["previous_run_id"] == HOSTILE


def test_a_driver_that_went_away_is_shown_with_its_fall():
    rows = ranked({"a": 3, "b": 1}, {"a": 1, "c": 1})
    assert [(r["reason"], r["users"], r["share_change"]) for r in rows] == [
        ("a", 3, 0.25),
        ("b", 1, 0.25),
        ("c", 0, -0.5),
    ]


def test_without_a_previous_run_there_is_no_change_column():
    assert "share_change" not in ranked({"a": 1}, None)[0]


@pytest.mark.parametrize("cells", [{}, {"high/high": 2, "odd": 1}])
def test_the_tier_grid_has_every_tier_even_when_empty_or_odd(cells):
    grid = risk_by_value(cells)
    assert set(grid) >= {"high", "medium", "low"} and all(set(r) >= {"high", "medium", "low"} for r in grid.values())


def test_an_empty_run_still_renders_every_section():
    content = build_content({"run_id": "r"}, {}, None, {}, None, data_quality_section([], 0, None), "t")
    page = to_html(content)
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in page
    assert "no training distribution in this model&#x27;s manifest" in page
    assert to_markdown(content).count("## ") == len(SECTIONS)
