"""Data care through the real S3 trigger: logs carry ids and counts, never rows or message text."""

from __future__ import annotations

import csv
import io
import json
import logging

import boto3
import pytest

from chalicelib.aws.queues import MAX_MESSAGE_BYTES, RetentionQueues
from chalicelib.observability import logger
from tests.integration.conftest import csv_bytes, service_log

HEADER = "user_id,event_time,event_type,value"


class _Capture(logging.Handler):
    """Keeps every record as the line Lambda would get: the Powertools JSON, extra keys included."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(logger.registered_formatter.format(record))


@pytest.fixture
def log_lines(client) -> list[str]:
    """Every line the service logger writes during the test, at every level."""
    # Requested after `client`, so after app.py's import has set the logger's level.
    capture = _Capture()
    with service_log(capture):
        yield capture.lines


def _invoke(client, event):
    [summary] = client.lambda_.invoke("on_behaviour_file", event).payload
    return summary


def _lines_named(lines: list[str], message: str) -> list[dict]:
    return [line for line in map(json.loads, lines) if line["message"] == message]


def _assert_absent(lines: list[str], secrets: list[str]) -> None:
    blob = "\n".join(lines)
    leaked = [s for s in secrets if s in blob]
    assert leaked == [], f"raw values reached the log: {leaked[:3]}"


# ------------------------------------------------------------------------------------ unreadable files

HEADERLESS = {
    # names are lower-cased by the header check, so the secrets are lower case already
    "comma_separated_row": (
        "zq-headless-user-5521,2026-05-10T10:00:00Z,purchase,4242.42\n"
        "zq-headless-user-5522,2026-05-11T10:00:00Z,session,31\n",
        ["zq-headless-user-5521", "4242.42", "2026-05-10t10:00:00z"],
        "found: zq-headless-user-5521, 2026-05-10t10:00:00z, purchase, 4242.42",
    ),
    "single_column_row": (
        "zq-headless-user-7731:2026-05-10:purchase:9191.19\n",
        ["zq-headless-user-7731", "9191.19"],
        "the header 'zq-headless-user-7731:2026-05-10:purchase:9191.19' splits into a single column",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADERLESS))
def test_a_headerless_file_is_quarantined_with_its_row_kept_out_of_the_logs(aws, client, log_lines, case):
    # GIVEN a CSV without a header row, so its first row of behaviour is taken for the header
    text, secrets, detail = HEADERLESS[case]
    key = "incoming/no-header.csv"
    event = aws.land(key, text.encode())

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN it is quarantined, and the reason beside it quotes the row for the operator
    assert summary["status"] == "unreadable"
    reason = json.loads(aws.get(f"quarantine/{key}.reason.json"))["reason"]
    assert "lacks required column(s)" in reason and detail in reason
    # AND the log line, the run summary and its stored copy say why without quoting the row
    [rejected] = _lines_named(log_lines, "file rejected")
    assert (
        rejected["reason"]
        == summary["reason"]
        == f"s3://{aws.settings.behaviour_bucket}/{key}:1: "
        + ("header lacks required column(s): user_id, event_time, event_type")
    )
    assert json.loads(aws.get(f"runs/{summary['run_id']}.json"))["reason"] == summary["reason"]
    assert _lines_named(log_lines, "run summary")
    _assert_absent(log_lines, secrets)


# ------------------------------------------------------------------------------------ rejected rows


def test_rejected_rows_are_counted_in_the_logs_and_kept_whole_only_in_the_reject_file(aws, client, log_lines):
    # GIVEN a file of valid rows and three bad rows whose user ids and values are easy to spot
    valid = [f"zq-ok-u{u},2026-05-{d:02d}T10:00:00Z,session,30" for u in range(4) for d in (4, 12, 20)]
    bad = [
        "zq-reject-user-8812,31/05/2026 10:00,login,",
        "zq-reject-user-8813,2026-05-10T10:00:00Z,purchase,notanumber-9931",
        "zq-reject-user-8814,2026-05-10T10:00:00Z,purchase,-777.77",
    ]
    key = "incoming/with-rejects.csv"
    event = aws.land(key, "".join(line + "\n" for line in [HEADER, *valid, *bad]).encode())

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN the valid rows are scored and the bad ones are in the reject file, whole, with their details
    assert summary["status"] == "succeeded"
    assert summary["rows"]["rejected"] == 3
    rejected = list(csv.DictReader(io.StringIO(aws.get(f"rejected/{key}.csv").decode())))
    assert [row["user_id"] for row in rejected] == ["zq-reject-user-8812", "zq-reject-user-8813", "zq-reject-user-8814"]
    assert "31/05/2026 10:00" in rejected[0]["detail"] and "notanumber-9931" in rejected[1]["detail"]
    # AND the log counts them by reason, without a user id, value or detail of theirs
    [logged] = _lines_named(log_lines, "rows rejected")
    assert logged["rejected_by_reason"] == {"bad_event_time": 1, "bad_value": 1, "negative_value": 1}
    assert _lines_named(log_lines, "run summary")[0]["summary"]["rows"]["rejected"] == 3
    _assert_absent(log_lines, ["zq-reject-user-88", "31/05/2026", "notanumber-9931", "-777.77"])


# ------------------------------------------------------------------------------------ scored files


def test_a_scored_file_logs_no_event_row_and_no_message_text(aws, client, log_lines, population, tmp_path):
    # GIVEN a year of behaviour of a few hundred users
    data = csv_bytes(population, tmp_path)
    rows = data.decode().splitlines()[1:]
    event = aws.land("incoming/history.csv", data)

    # WHEN the S3 trigger runs and messages go out
    summary = _invoke(client, event)
    texts = [body["content"]["text"] for body in aws.drain_all()]

    # THEN the run was logged with its counts
    assert summary["status"] == "succeeded" and texts
    [logged] = _lines_named(log_lines, "run summary")
    assert logged["summary"]["rows"] == summary["rows"]
    assert sum(logged["summary"]["messages_sent"].values()) == len(texts)
    # AND no log line holds an event row or a message's text
    assert len(rows) == summary["rows"]["read"]
    _assert_absent(log_lines, rows + texts)


# ------------------------------------------------------------------------------------ message size


def _message(i: int, text: str) -> dict:
    """A retention message as the adapter sees it, with text of the given length."""
    return {
        "message_id": f"00000000-0000-4000-8000-{i:012d}",
        "user_id": f"zq-big-u{i}",
        "risk_tier": "high",
        "value_tier": "medium",
        "action": {"type": "win_back", "channel": "email", "offer": "none"},
        "content": {"locale": "en", "text": text},
    }


def _body_bytes(message: dict) -> int:
    return len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())


# Names, types and values of the three attributes: risk_tier=high, value_tier=medium, channel=email.
ATTRIBUTE_BYTES = sum(
    len(n) + len("String") + len(v) for n, v in (("risk_tier", "high"), ("value_tier", "medium"), ("channel", "email"))
)


def test_a_message_over_the_sqs_limit_with_its_attributes_is_refused_alone_without_its_content(aws):
    # GIVEN a message whose body alone fits SQS's limit but not with its attributes, between two that fit
    message = _message(1, "")
    message["content"]["text"] = "zq-secret-text " + "x" * (
        MAX_MESSAGE_BYTES - _body_bytes(message) - len("zq-secret-text ")
    )
    assert _body_bytes(message) == MAX_MESSAGE_BYTES < MAX_MESSAGE_BYTES + ATTRIBUTE_BYTES
    others = [_message(0, "fine"), _message(2, "fine")]
    queues = RetentionQueues(boto3.client("sqs"), aws.settings.queues)

    # WHEN they are sent
    sent = queues.send("high", [others[0], message, others[1]])

    # THEN it is refused before any call, alone, naming its id and size but nothing of its content
    [(body, why)] = sent.refused
    assert body is message and (sent.accepted, sent.failed) == (2, [])
    assert message["message_id"] in why and str(MAX_MESSAGE_BYTES + ATTRIBUTE_BYTES) in why
    assert "zq-secret-text" not in why and "zq-big-u1" not in why
    assert queues.calls == 1 and sorted(m["body"]["message_id"] for m in aws.drain("high")) == sorted(
        m["message_id"] for m in others
    )


def test_large_messages_go_in_batches_that_stay_within_the_sqs_limit(aws):
    # GIVEN ten messages of about 100 KiB each: one batch of ten would be far over SQS's limit
    messages = [_message(i, f"zq-{i}-" + "y" * 100_000) for i in range(10)]
    queues = RetentionQueues(boto3.client("sqs"), aws.settings.queues)
    sent_batches: list[int] = []
    real = queues.client.send_message_batch

    def send_message_batch(QueueUrl, Entries):
        size = sum(len(e["MessageBody"].encode()) + ATTRIBUTE_BYTES for e in Entries)
        sent_batches.append(size)
        return real(QueueUrl=QueueUrl, Entries=Entries)

    queues.client.send_message_batch = send_message_batch

    # WHEN they are sent
    sent = queues.send("high", messages)

    # THEN every one arrives, in calls that each stay within the limit
    assert sent == (10, [], [])
    assert len(sent_batches) == 5 and max(sent_batches) <= MAX_MESSAGE_BYTES
    assert sorted(m["body"]["message_id"] for m in aws.drain("high")) == sorted(m["message_id"] for m in messages)
