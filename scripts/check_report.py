"""Render a run report in headless Chromium and check it: every section and chart there, nothing cut off.

`make report-check` (not part of `make test`): builds the demo's report (or takes the HTML file given), loads a copy
of it with a probe script in Debian's Chromium at two window widths, reads back what the layout engine measured
(--dump-dom), and fails when a section or chart is missing or empty, an element reaches past the page's width,
or a table spills out of its box. Then it writes a full-page PNG screenshot (default docs/report.png).

    python scripts/check_report.py [REPORT.html] [--screenshot docs/report.png]
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.reporting.render import SECTIONS  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# With the network closed these matter: no first-run, sync, component or background fetches to wait for.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
WIDTHS = (1280, 760)  # a desktop window and a narrow one: the page must fit both
SCREENSHOT_WIDTH = 1100
TIMEOUT_SECONDS = 120
RESULT_ID = "report-check-result"
# Runs after the page has laid out; what it writes is read back from the dumped DOM.
PROBE = """<script>
(function () {
  var doc = document.documentElement, vw = doc.clientWidth, ids = %(ids)s;
  var out = {viewport: vw, scroll_width: doc.scrollWidth, height: doc.scrollHeight, sections: {}, svgs: [],
             wide: [], clipped: [], spills: []};
  ids.forEach(function (id) {
    var el = document.getElementById(id);
    out.sections[id] = el ? {height: el.getBoundingClientRect().height} : null;
  });
  document.querySelectorAll("svg").forEach(function (s) {
    var r = s.getBoundingClientRect(), sec = s.closest("section");
    out.svgs.push({section: sec ? sec.id : null, width: r.width, height: r.height,
                   shapes: s.querySelectorAll("rect,line").length});
  });
  document.querySelectorAll("body *").forEach(function (el) {
    var r = el.getBoundingClientRect(), sec = el.closest("section");
    var name = el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (sec ? " in section " + sec.id : "");
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) out.wide.push({element: name, right: r.right});
    var box = el.parentElement.getBoundingClientRect();
    if (el.tagName === "TABLE" && r.right > box.right + 0.5) out.spills.push({element: name});
    var style = getComputedStyle(el);
    if (style.overflowX !== "visible" && el.scrollWidth > el.clientWidth + 1) out.clipped.push({element: name});
  });
  var pre = document.createElement("pre");
  pre.id = "%(result)s";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


class CheckFailed(Exception):
    """The report did not render as it should; the message says what is wrong."""


def _chromium(args: list[str]) -> str:
    """Run headless Chromium with a fresh profile; return its stdout."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"chromium exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def measure(page: Path, width: int) -> dict[str, Any]:
    """Return what the probe measured of `page` in a window `width` pixels wide."""
    probe = PROBE % {"ids": json.dumps([sid for sid, _ in SECTIONS]), "result": RESULT_ID}
    text = page.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "probed.html"
        copy.write_text(text.replace("</body>", probe + "</body>", 1), encoding="utf-8")
        dom = _chromium([f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()])
    found = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', dom, re.S)
    if found is None:
        raise CheckFailed(f"the probe left no result at width {width}: the page did not load or run")
    return json.loads(html.unescape(found.group(1)))


def problems(measured: dict[str, Any]) -> list[str]:
    """Return what is wrong with one measurement: missing or empty sections and charts, overflow, clipping."""
    out = []
    width = measured["viewport"]
    for sid, _ in SECTIONS:
        section = measured["sections"].get(sid)
        if section is None:
            out.append(f"section {sid} is missing")
        elif section["height"] <= 0:
            out.append(f"section {sid} has no height")
    if not measured["svgs"]:
        out.append("the page has no chart")
    for i, chart in enumerate(measured["svgs"]):
        if chart["width"] <= 0 or chart["height"] <= 0 or chart["shapes"] == 0:
            out.append(f"chart {i} in section {chart['section']} is empty ({chart['width']}x{chart['height']})")
    if measured["scroll_width"] > width:
        out.append(f"the page scrolls sideways: {measured['scroll_width']} px wide in a {width} px window")
    out += [f"{w['element']} reaches past the page ({w['right']:.0f} > {width} px)" for w in measured["wide"][:10]]
    out += [f"{c['element']} cuts off its content" for c in measured["clipped"][:10]]
    out += [f"{s['element']} spills out of its box over what is beside it" for s in measured.get("spills", [])[:10]]
    return out


def screenshot(page: Path, out: Path, height: int) -> None:
    """Write a full-page PNG of `page`: a window as tall as the page."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _chromium([f"--window-size={SCREENSHOT_WIDTH},{height}", f"--screenshot={out.resolve()}", page.resolve().as_uri()])
    if not out.exists() or out.stat().st_size == 0:
        raise CheckFailed(f"chromium wrote no screenshot to {out}")


def check(page: Path, shot: Path | None) -> dict[str, Any]:
    """Check `page` at every width and write its screenshot; return the measurements; raise CheckFailed."""
    measured = {width: measure(page, width) for width in WIDTHS}
    found = [f"at {width} px: {p}" for width, m in measured.items() for p in problems(m)]
    if found:
        raise CheckFailed("\n".join(found))
    if shot is not None:
        tall = measure(page, SCREENSHOT_WIDTH)["height"]
        screenshot(page, shot, int(tall) + 16)
    return measured


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", nargs="?", type=Path, help="default: run the demo and check its report")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "report.png")
    parser.add_argument("--no-screenshot", action="store_true")
    args = parser.parse_args(argv)
    page = args.report
    if page is None:
        from churnguard_offline.demo import run_demo

        page = run_demo()
    try:
        measured = check(page, None if args.no_screenshot else args.screenshot)
    except (CheckFailed, subprocess.TimeoutExpired, FileNotFoundError) as exc:
        print(f"check_report: {page}: {exc}", file=sys.stderr)
        return 1
    charts = len(measured[WIDTHS[0]]["svgs"])
    print(f"check_report: {page}: {len(SECTIONS)} sections and {charts} charts render at {WIDTHS} px, nothing cut off")
    if not args.no_screenshot:
        print(f"check_report: screenshot {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
