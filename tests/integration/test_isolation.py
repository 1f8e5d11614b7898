"""One file that fails every attempt, through the real S3 trigger on moto: Lambda retries it a bounded number of
times, then it is quarantined with its reason, and the invocations say so in their metrics."""

from __future__ import annotations

import json

import pytest

from chalicelib.observability import metrics
from chalicelib.runs import file_run
from chalicelib.settings import DEFAULTS

KEY = "incoming/out-of-memory.csv"
DATA = b"user_id,event_time,event_type\nu1,2026-05-01T00:00:00Z,login\nu2,2026-05-02T00:00:00Z,purchase\n"


def _emitted(capsys) -> list[dict]:
    """Return the embedded-metric log lines the invocations printed."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]


def _total(lines: list[dict], name: str) -> float:
    return sum(sum(line.get(name, [])) for line in lines)


def test_a_file_failing_every_attempt_is_quarantined_by_the_trigger_after_the_limit(aws, client, monkeypatch, capsys):
    # GIVEN a landed file whose every read runs out of memory
    metrics.clear_metrics()
    event = aws.land(KEY, DATA)

    def read_events(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(file_run, "read_events", read_events)
    limit = DEFAULTS["max_file_attempts"]

    # WHEN Lambda delivers its event up to the limit, every invocation raises (so Lambda retries it)
    for attempt in range(1, limit + 1):
        with pytest.raises(MemoryError):
            client.lambda_.invoke("on_behaviour_file", event)
        [counted] = aws.keys("attempts/")
        assert json.loads(aws.get(counted))["attempts"] == attempt
    assert aws.ledger() == [] and aws.keys("quarantine/") == []

    # THEN the next delivery quarantines the file, with its reason and a ledger record, and does not raise
    [summary] = client.lambda_.invoke("on_behaviour_file", event).payload
    assert summary["status"] == "quarantined" and summary["attempts"] == limit and "MemoryError" in summary["reason"]
    assert aws.keys("quarantine/") == [f"quarantine/{KEY}", f"quarantine/{KEY}.reason.json"]
    reason = json.loads(aws.get(f"quarantine/{KEY}.reason.json"))
    assert reason["last_error"]["type"] == "MemoryError" and reason["attempts"] == limit
    [ledger] = aws.ledger()
    assert ledger["status"] == "quarantined"
    assert aws.keys("incoming/") == [] and aws.keys("attempts/") == []

    # AND the invocations published each failed attempt and the quarantine as CloudWatch metrics
    lines = _emitted(capsys)
    assert _total(lines, "FileAttemptsFailed") == limit and _total(lines, "FilesQuarantined") == 1
    assert all(line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ChurnGuard" for line in lines)

    # AND a later delivery of the same event is a duplicate
    [again] = client.lambda_.invoke("on_behaviour_file", event).payload
    assert again["status"] == "duplicate"
