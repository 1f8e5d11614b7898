"""The run report on moto: the scheduled handler writes it to reports/, and the command line renders it."""

from __future__ import annotations

import json

from chalicelib.reporting.render import SECTIONS
from chalicelib.scoring.events import SECONDS_PER_DAY
from churnguard_offline.cli import main
from churnguard_offline.lambda_events import scheduled
from tests.integration.conftest import AS_OF, csv_bytes

HOSTILE_KEY = "incoming/<b>bold</b>.csv.gz"


def test_a_scheduled_run_writes_its_html_report_and_the_command_line_renders_it(
    aws, client, population, tmp_path, capsys
):
    # GIVEN users scored from a landed file, and a broken file quarantined under a key holding markup
    client.lambda_.invoke("on_behaviour_file", aws.land("incoming/a.csv", csv_bytes(population, tmp_path)))
    client.lambda_.invoke("on_behaviour_file", aws.land(HOSTILE_KEY, b"\x1f\x8b not gzip"))
    assert "quarantine/" + HOSTILE_KEY in aws.keys("quarantine/")
    # WHEN the schedule runs 45 days later through its handler
    later = AS_OF.timestamp() + 45 * SECONDS_PER_DAY
    summary = client.lambda_.invoke("scheduled_scoring", scheduled(later)).payload
    # THEN the run's report is in the bucket: its page, its content, and both again as the latest
    run_id = summary["run_id"]
    bucket = aws.settings.behaviour_bucket
    assert summary["run_report"] == f"s3://{bucket}/reports/{run_id}.html"
    assert {f"reports/{n}.{ext}" for n in (run_id, "latest") for ext in ("html", "json")} <= set(aws.keys("reports/"))
    head = aws.s3.head_object(Bucket=bucket, Key=f"reports/{run_id}.html")
    assert head["ContentType"] == "text/html; charset=utf-8"
    page = aws.get(f"reports/{run_id}.html").decode()
    assert page == aws.get("reports/latest.html").decode()
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in page
    # AND the quarantined file is named in its data-quality section, escaped
    content = json.loads(aws.get("reports/latest.json"))
    assert content["data_quality"]["files_quarantined"] == 1 and content["users_scored"] == summary["users_scored"]
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    # AND reports/lift.json is still written as it was, and the run's record stays free of the aggregates
    assert json.loads(aws.get("reports/lift.json"))["rows"] == content["lift"]["rows"]
    assert "aggregates" not in json.loads(aws.get(f"runs/{run_id}.json"))
    # AND nothing the run did was refused as real AWS would refuse it
    assert aws.strict.refused == []

    # WHEN the command line renders it as HTML to a file, and as Markdown
    out = tmp_path / "report.html"
    assert main(["report", "--format", "html", "--out", str(out)]) == 0
    assert main(["report", "--format", "md"]) == 0
    # THEN the file is the same page with every section, and the Markdown has every heading
    written = out.read_text(encoding="utf-8")
    assert all(f'<section id="{sid}">' in written for sid, _ in SECTIONS)
    markdown = capsys.readouterr().out
    assert all(f"## {heading}" in markdown for _, heading in SECTIONS)
    # AND the default, json, is still the lift report, with the run report beside it
    assert main(["report"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {"horizon_days", "as_of", "rows"} <= set(printed) and printed["run_report"]["run_id"] == run_id
