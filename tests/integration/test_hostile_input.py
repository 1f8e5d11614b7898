"""Hostile and broken behaviour files through the real S3 trigger: nothing escapes, nothing is lost."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections import Counter

import pytest

from tests.integration.conftest import gz_truncated

HEADER = "user_id,event_time,event_type,value"
BOM = b"\xef\xbb\xbf"


def _valid_rows(tag: str, users: int = 4) -> list[list[str]]:
    """Plausible May 2026 behaviour of a few users, so the file scores as of the fixtures' AS_OF."""
    kinds = (("login", ""), ("session", "30"), ("purchase", "19.99"))
    return [[f"{tag}-u{u}", f"2026-05-{4 * d:02d}T10:00:00Z", *kinds[d % 3]] for u in range(users) for d in range(1, 7)]


def _users(rows: list[list[str]]) -> set[str]:
    return {row[0] for row in rows}


def _csv(rows: list[list[str]], header: str = HEADER, sep: str = ",", end: str = "\n") -> bytes:
    return "".join(line + end for line in [header, *(sep.join(row) for row in rows)]).encode()


def _with_bad_row(tag: str, bad: str) -> tuple[bytes, set[str], int]:
    """Return a CSV of valid rows with one raw bad row in the middle, its valid users and valid row count."""
    rows = _valid_rows(tag)
    lines = [HEADER, *(",".join(row) for row in rows)]
    lines.insert(len(lines) // 2, bad)
    return "".join(line + "\n" for line in lines).encode(), _users(rows), len(rows)


def _invoke(client, event):
    [summary] = client.lambda_.invoke("on_behaviour_file", event).payload
    return summary


def _assert_accounted(aws, summary, key: str, users: set[str], scored: int, bad: list[str]) -> None:
    """Assert that valid rows were scored, every bad row rejected for its reason, and the counts add up."""
    assert summary["status"] == "succeeded"
    assert summary["object"]["key"] == key
    rows = summary["rows"]
    assert rows["read"] == rows["scored"] + rows["rejected"] == scored + len(bad)
    assert rows["scored"] == scored
    assert rows["rejected_by_reason"] == dict(Counter(bad))
    stored = json.loads(aws.get(f"runs/{summary['run_id']}.json"))
    assert stored["rows"] == rows

    risk = {item["user_id"] for item in aws.items(aws.settings.risk_table)}
    assert risk == users
    assert summary["users_scored"] == len(users)

    if bad:
        rejected = list(csv.DictReader(io.StringIO(aws.get(f"rejected/{key}.csv").decode("utf-8"))))
        assert [row["reason"] for row in rejected] == bad
        assert all(row["detail"] for row in rejected)
    else:
        assert aws.keys("rejected/") == []
    assert aws.keys("quarantine/") == []


def _assert_quarantined(aws, summary, key: str, why: str) -> None:
    """Assert that an unreadable file was moved aside with its reason, and nothing of it was scored."""
    assert summary["status"] == "unreadable"
    assert why in summary["reason"]
    assert aws.keys("quarantine/") == [f"quarantine/{key}", f"quarantine/{key}.reason.json"]
    assert why in json.loads(aws.get(f"quarantine/{key}.reason.json"))["reason"]
    assert aws.keys(key) == []
    assert aws.items(aws.settings.risk_table) == []
    assert aws.keys("rejected/") == []


# ------------------------------------------------------------------------------------ whole-file quirks


def _empty() -> tuple[bytes, list[list[str]], list[str]]:
    return b"", [], []


def _header_only() -> tuple[bytes, list[list[str]], list[str]]:
    return (HEADER + "\n").encode(), [], []


def _bom() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("bom")
    return BOM + _csv(rows), rows, []


def _crlf() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("crlf")
    return _csv(rows, end="\r\n"), rows, []


def _semicolons() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("semi")
    return _csv(rows, header=HEADER.replace(",", ";"), sep=";"), rows, []


def _quoted_newlines() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("quoted")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*HEADER.split(","), "note"])
    for i, row in enumerate(rows):
        writer.writerow([*row, f"first line\nsecond, with a comma {i}" if i % 2 else "plain"])
    writer.writerow(["", "2026-05-10T10:00:00Z", "login", "", "a bad row\nafter quoted ones"])
    return out.getvalue().encode(), rows, ["missing_user_id"]


def _duplicated_other_column() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("dupnote")
    return _csv([[*row, "x", "y"] for row in rows], header=HEADER + ",note,note"), rows, []


def _invalid_utf8() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("utf8")
    return _csv(rows) + b"bad\xff\xfe-user,2026-05-10T10:00:00Z,login,\n", rows, ["bad_encoding"]


def _jsonl_broken_lines() -> tuple[bytes, list[list[str]], list[str]]:
    rows = _valid_rows("jsonl")
    lines = [json.dumps(dict(zip(HEADER.split(","), row, strict=True))) for row in rows]
    lines[3:3] = ['{"user_id": "jsonl-u0", "event_time": "2026-05-', "not json at all"]
    lines.append("[1, 2]")
    data = "\n".join(lines) + '\n{"user_id": "jsonl-u9"'  # a last line cut short, without a newline
    return data.encode(), rows, ["bad_json"] * 4


FILE_CASES = {
    "empty_file": ("incoming/empty.csv", _empty),
    "header_only": ("incoming/header.csv", _header_only),
    "utf8_bom": ("incoming/bom.csv", _bom),
    "crlf_line_ends": ("incoming/crlf.csv", _crlf),
    "semicolon_delimiter": ("incoming/semicolons.csv", _semicolons),
    "quoted_newlines": ("incoming/quoted.csv", _quoted_newlines),
    "duplicated_other_column": ("incoming/dupnote.csv", _duplicated_other_column),
    "invalid_utf8_in_one_row": ("incoming/latin1.csv", _invalid_utf8),
    "jsonl_with_broken_lines": ("incoming/events.jsonl", _jsonl_broken_lines),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_odd_but_readable_files_score_their_valid_rows_and_reject_the_rest(aws, client, case):
    # GIVEN a file with a quirk of its own
    key, build = FILE_CASES[case]
    data, rows, bad = build()
    event = aws.land(key, data)

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN its valid rows are scored, its bad rows rejected with their reasons, and the counts add up
    _assert_accounted(aws, summary, key, _users(rows), len(rows), bad)


# ------------------------------------------------------------------------------------ one hostile row

BAD_ROWS = {
    "empty_user_id": (",2026-05-10T10:00:00Z,login,", "missing_user_id"),
    "user_id_of_10000_characters": ("x" * 10_000 + ",2026-05-10T10:00:00Z,login,", "user_id_too_long"),
    "user_id_with_control_characters": ("evil\x07\x1b[31m,2026-05-10T10:00:00Z,login,", "user_id_control_chars"),
    "date_in_the_future": ("row-u0,2026-06-03T00:00:00Z,login,", "future_event_time"),
    "date_in_year_9999": ("row-u0,9999-12-31T23:59:59Z,login,", "future_event_time"),
    "date_before_1970": ("row-u0,1969-12-31T23:59:59Z,login,", "event_time_out_of_range"),
    "date_in_year_1": ("row-u0,0001-01-01,login,", "event_time_out_of_range"),
    "unparsable_date": ("row-u0,31/05/2026 10:00,login,", "bad_event_time"),
    "nan_value": ("row-u0,2026-05-10T10:00:00Z,purchase,NaN", "nonfinite_value"),
    "infinite_value": ("row-u0,2026-05-10T10:00:00Z,purchase,-inf", "nonfinite_value"),
    "negative_value": ("row-u0,2026-05-10T10:00:00Z,purchase,-5", "negative_value"),
    "absurd_value": ("row-u0,2026-05-10T10:00:00Z,purchase,1e12", "value_out_of_range"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_one_hostile_row_is_rejected_with_its_reason_and_the_rest_is_scored(aws, client, case):
    # GIVEN a file of valid rows with one hostile row among them
    raw, reason = BAD_ROWS[case]
    key = f"incoming/{case}.csv"
    data, users, scored = _with_bad_row("row", raw)
    event = aws.land(key, data)

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN that row alone is rejected, with its reason, and everyone else is scored
    _assert_accounted(aws, summary, key, users, scored, [reason])


def test_a_json_row_nested_past_the_decoders_limit_costs_only_that_row(aws, client):
    # GIVEN a JSON Lines file with one row nested 100,000 levels deep among valid rows
    rows = [json.dumps(dict(zip(HEADER.split(","), row, strict=True))) for row in _valid_rows("deep")]
    lines = [*rows[:5], "[" * 100_000 + "]" * 100_000, *rows[5:]]
    key = "incoming/deep.jsonl"
    event = aws.land(key, ("\n".join(lines) + "\n").encode())

    # WHEN the S3 trigger runs (it raised RecursionError on every attempt before)
    summary = _invoke(client, event)

    # THEN that row alone is rejected as bad JSON and everyone else is scored
    _assert_accounted(aws, summary, key, _users(_valid_rows("deep")), len(rows), ["bad_json"])


def test_a_quote_that_never_closes_costs_one_row_not_the_rest_of_the_file(aws, client):
    # GIVEN a stray quote in one field, followed by 600 valid rows (once, they all vanished into one reject)
    rows = _valid_rows("quote", users=100)
    key = "incoming/stray-quote.csv"
    data = _csv([["quote-bad", '"2026-05-10T10:00:00Z', "login", ""], *rows])
    event = aws.land(key, data)

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN that line alone is rejected and every valid row is scored
    _assert_accounted(aws, summary, key, _users(rows), len(rows), ["malformed_row"])


def test_a_file_whose_every_row_is_rejected_ends_rejected_and_publishes_a_metric(aws, client, capsys):
    # GIVEN a file of 63 rows, none with a readable time
    key = "incoming/all-bad.csv"
    event = aws.land(key, _csv([[f"bad-u{i}", "31/05/2026", "login", ""] for i in range(63)]))

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN the run has its own status, and the invocation wrote the metric as an embedded-metric log line
    assert summary["status"] == "rejected" and summary["rows"]["scored"] == 0 and summary["rows"]["rejected"] == 63
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(m.get("FilesAllRowsRejected") == [1.0] for m in emitted)


# ------------------------------------------------------------------------------------ unreadable files


def _gzip_corrupt() -> bytes:
    data = bytearray(gzip.compress(_csv(_valid_rows("gz") * 20), mtime=0))
    data[len(data) // 2 : len(data) // 2 + 32] = b"\xff" * 32
    return bytes(data)


UNREADABLE = {
    "missing_required_column": (
        "incoming/no-time.csv",
        lambda: b"user_id,event_type,value\nu1,login,\n",
        "lacks required column(s): event_time",
    ),
    "duplicated_required_column": (
        "incoming/two-times.csv",
        lambda: b"user_id,event_time,event_type,event_time\nu1,2026-05-10,login,2026-05-11\n",
        "'event_time' appears more than once",
    ),
    "corrupt_gzip": ("incoming/corrupt.csv.gz", _gzip_corrupt, "corrupt gzip data"),
    "truncated_gzip": (
        "incoming/truncated.csv.gz",
        lambda: gz_truncated(_csv(_valid_rows("gz") * 50)),
        "gzip data ends early",
    ),
}


@pytest.mark.parametrize("case", sorted(UNREADABLE))
def test_an_unreadable_file_is_quarantined_with_its_reason(aws, client, case):
    # GIVEN a file that cannot be read at all
    key, build, why = UNREADABLE[case]
    event = aws.land(key, build())

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN no exception escapes, and the file is moved aside with the reason beside it
    _assert_quarantined(aws, summary, key, why)


def test_a_gzip_bomb_is_quarantined_once_it_inflates_past_the_limit(aws, client, monkeypatch):
    # GIVEN a decompression limit of 64 KiB, set before the container builds its pipeline
    monkeypatch.setenv("MAX_DECOMPRESSED_BYTES", "65536")
    # AND a gzip file of a few KiB that inflates to 10 MiB of valid rows
    body = _csv(_valid_rows("bomb")) + b"bomb-u0,2026-05-10T10:00:00Z,login,\n" * 280_000
    data = gzip.compress(body, mtime=0)
    assert len(data) < 64 * 1024 < len(body)
    event = aws.land("incoming/bomb.csv.gz", data)

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN it is quarantined naming the limit, before anything of it was scored
    _assert_quarantined(aws, summary, "incoming/bomb.csv.gz", "decompresses to more than 65536 bytes")


def test_a_file_too_large_for_the_function_memory_is_refused_with_the_limit_and_never_retried(aws, client, monkeypatch):
    # GIVEN a function of 257 MB, so a file may take about 0.8 MiB (set before the container builds its pipeline)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "257")
    # AND a modest file of 1,000 users, one event each (about 1.2 MiB held in memory)
    body = _csv([[f"big-u{i}", "2026-05-10T10:00:00Z", "login", ""] for i in range(1_000)])
    event = aws.land("incoming/big.csv", body)

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN the file is refused as too large, naming the limit and the setting, moved aside and nothing scored
    assert summary["status"] == "too_large"
    assert "FILE_MEMORY_BUDGET_MB" in summary["reason"] and "a file may take" in summary["reason"]
    assert aws.keys("quarantine/") == ["quarantine/incoming/big.csv", "quarantine/incoming/big.csv.reason.json"]
    assert aws.items(aws.settings.state_table) == [] and aws.items(aws.settings.risk_table) == []
    # AND a redelivery finds its ledger record instead of trying again
    assert _invoke(client, event)["status"] in ("duplicate", "gone")


# ------------------------------------------------------------------------------------ awkward keys


@pytest.mark.parametrize(
    "key",
    [
        "incoming/with spaces/Q3 export (final).csv",
        "incoming/ünïcødé/日本語 données.csv",
        "incoming/100%25 literal %41 and a+plus.csv",
    ],
    ids=["spaces", "unicode", "percent_escapes"],
)
def test_keys_that_s3_url_encodes_are_read_scored_and_rejected_under_their_real_name(aws, client, key):
    # GIVEN a file under a key the S3 notification carries URL-encoded, with one bad row
    data, users, scored = _with_bad_row("key", ",2026-05-10T10:00:00Z,login,")
    event = aws.land(key, data)
    assert event["Records"][0]["s3"]["object"]["key"] != key

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN the object is found under its real key and its rejects land beside that name
    _assert_accounted(aws, summary, key, users, scored, ["missing_user_id"])
    assert aws.ledger() != []


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("incoming/../ledger/x.csv", "'..' path segment"),
        ("incoming/./x.csv", "'.' or '..' path segment"),
        ("incoming//x.csv", "empty path segment"),
        ("incoming/a\\b.csv", "backslash"),
        ("incoming/a\x07b.csv", "control character"),
    ],
)
def test_keys_with_path_tricks_are_refused_before_anything_is_read(aws, client, key, why):
    # GIVEN a valid file under a key that would read as a path once copied under rejected/ or quarantine/
    data, _, _ = _with_bad_row("trick", ",2026-05-10T10:00:00Z,login,")
    event = aws.land(key, data)

    # WHEN the S3 trigger runs
    summary = _invoke(client, event)

    # THEN it is refused, saying why, and nothing was scored, written or moved
    assert summary["status"] == "refused" and why in summary["why"]
    assert aws.items(aws.settings.risk_table) == []
    assert aws.keys("rejected/") == aws.keys("quarantine/") == aws.ledger() == []
