"""The dependency-free SVG writer: well-formed charts that scale to the page, every text escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from chalicelib.reporting import svg

NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>&'


def parse(text: str) -> ET.Element:
    return ET.fromstring(text)


def test_a_column_chart_has_one_column_per_value_scaled_to_the_largest():
    # GIVEN four values WHEN drawn
    root = parse(svg.column_chart([1, 2, 4, 0], ["a", "b", "c", "d"], "four"))
    rects = root.findall(f"{NS}rect")
    # THEN four columns, the largest filling the plot's height, a zero one with none, and a title
    heights = [float(r.get("height")) for r in rects]
    assert len(rects) == 4
    assert heights[2] == max(heights) and heights[3] == 0 and heights[1] == heights[2] / 2
    assert root.find(f"{NS}title").text == "four"
    # AND it scales to the page instead of overflowing it
    assert root.get("width") == "100%" and root.get("viewBox").startswith("0 0 ")


def test_markers_are_drawn_at_their_position_along_the_axis_and_named():
    root = parse(svg.column_chart([1] * 20, [str(i) for i in range(20)], "t", markers=[(0.0, "lo"), (0.5, "mid")]))
    lines = [x for x in root.findall(f"{NS}line") if x.get("stroke-dasharray")]
    xs = [float(x.get("x1")) for x in lines]
    # THEN the midpoint marker is halfway between the axis' ends, each labelled
    assert len(lines) == 2 and xs[0] < xs[1]
    texts = [t.text for t in root.findall(f"{NS}text")]
    assert "lo" in texts and "mid" in texts
    left, right = 44, 640 - 12
    assert abs(xs[1] - (left + (right - left) / 2)) < 0.5


def test_every_text_in_a_chart_is_escaped():
    # GIVEN labels and a title holding markup WHEN drawn
    out = svg.bar_chart([(HOSTILE, 3.0)], HOSTILE) + svg.column_chart([1], [HOSTILE], HOSTILE, [(0.5, HOSTILE)])
    # THEN no markup gets through, and each chart still parses with the label as text
    assert "<script>" not in out
    for part in out.split("</svg>")[:-1]:
        parse(part + "</svg>")
    root = parse(svg.bar_chart([("<b>x</b>", 1.0)], "t"))
    assert "<b>x</b>" in [t.text for t in root.findall(f"{NS}text")]


def test_a_bar_chart_without_items_says_so_and_a_long_label_is_shortened():
    empty = parse(svg.bar_chart([], "none"))
    assert [t.text for t in empty.findall(f"{NS}text")] == ["nothing to show"]
    root = parse(svg.bar_chart([("x" * 200, 1.0)], "long"))
    label = root.findall(f"{NS}text")[0].text
    assert len(label) == 32 and label.endswith("…")
    # AND the full label stays in the bar's tooltip
    assert root.find(f"{NS}rect/{NS}title").text.startswith("x" * 200)


def test_negative_and_zero_values_draw_no_bar_and_no_error():
    root = parse(svg.bar_chart([("a", 0.0), ("b", -1.0)], "zeros"))
    assert [float(r.get("width")) for r in root.findall(f"{NS}rect")] == [0.0, 0.0]
