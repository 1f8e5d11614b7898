"""scripts/check_report.py's reading of what Chromium measured (the browser run itself is `make report-check`)."""

from __future__ import annotations

import shutil

import pytest

from chalicelib.reporting.render import SECTIONS
from tests.conftest import load_script

check = load_script("check_report")


def measured(**change) -> dict:
    """Return a measurement of a page that renders well, with `change` applied."""
    base = {
        "viewport": 1280,
        "scroll_width": 1280,
        "height": 4000,
        "sections": {sid: {"height": 100.0} for sid, _ in SECTIONS},
        "svgs": [{"section": "drift", "width": 640.0, "height": 200.0, "shapes": 12}],
        "wide": [],
        "clipped": [],
        "spills": [],
    }
    return {**base, **change}


def test_a_page_that_renders_well_has_no_problem():
    assert check.problems(measured()) == []


def test_a_missing_or_empty_section_is_named():
    sections = {sid: {"height": 100.0} for sid, _ in SECTIONS}
    sections["drift"] = None
    sections["lift"] = {"height": 0}
    assert check.problems(measured(sections=sections)) == ["section lift has no height", "section drift is missing"]


def test_an_empty_chart_or_no_chart_at_all_fails():
    empty = [{"section": "messages", "width": 0.0, "height": 0.0, "shapes": 0}]
    assert check.problems(measured(svgs=empty)) == ["chart 0 in section messages is empty (0.0x0.0)"]
    assert check.problems(measured(svgs=[])) == ["the page has no chart"]


def test_sideways_scrolling_an_element_past_the_page_and_clipped_content_fail():
    found = check.problems(
        measured(scroll_width=1500, wide=[{"element": "table", "right": 1500.0}], clipped=[{"element": "td"}])
    )
    assert found == [
        "the page scrolls sideways: 1500 px wide in a 1280 px window",
        "table reaches past the page (1500 > 1280 px)",
        "td cuts off its content",
    ]


def test_a_table_spilling_over_its_neighbour_fails():
    found = check.problems(measured(spills=[{"element": "table in section drivers"}]))
    assert found == ["table in section drivers spills out of its box over what is beside it"]


@pytest.mark.skipif(shutil.which(check.CHROMIUM) is None, reason="no Chromium here")
def test_a_page_wider_than_the_window_is_caught_in_chromium(tmp_path):
    # GIVEN a page whose one table is 3000 px wide WHEN Chromium measures it THEN the check names it
    page = tmp_path / "wide.html"
    cells = "".join(f"<td>{'x' * 40}</td>" for _ in range(60))
    body = "".join(
        f'<section id="{sid}"><svg width="10" height="10"><rect width="5" height="5"/></svg></section>'
        for sid, _ in SECTIONS
    )
    page.write_text(f"<html><body>{body}<table style='width:3000px'><tr>{cells}</tr></table></body></html>")
    found = check.problems(check.measure(page, 800))
    assert any("scrolls sideways" in p for p in found) and any(p.startswith("table") for p in found)
