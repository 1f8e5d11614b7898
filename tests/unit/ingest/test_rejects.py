"""Reject file: reason codes, the human detail of each, and a writer bounded in size."""

from __future__ import annotations

import csv
import io

from chalicelib.ingest import REJECT_REASONS, RejectWriter
from chalicelib.ingest.rejects import CODE, detail
from tests.unit.ingest.conftest import HEADER, read, rejects


def test_reject_file_keeps_the_fields_as_they_appeared() -> None:
    result = read(HEADER + "u1,2024-03-01,purchase,-3\n")

    assert rejects(result) == [
        {
            "line": "2",
            "reason": "negative_value",
            "detail": "value '-3' is negative; only refund values may be negative",
            "user_id": "u1",
            "event_time": "2024-03-01",
            "event_type": "purchase",
            "value": "-3",
        }
    ]


def test_out_of_range_rejects_say_why() -> None:
    result = read(HEADER + "u1,1969-07-20T20:17:00Z,login,\nu1,2024-03-01,purchase,5e15\n")

    first, second = rejects(result)
    assert first["reason"] == "event_time_out_of_range" and "before 1970-01-01" in first["detail"]
    assert second["reason"] == "value_out_of_range" and "1e+09" in second["detail"]


def test_reject_writer_truncates_long_fields_and_caps_the_rows_it_writes() -> None:
    # given a writer allowed to write two rows
    with RejectWriter(max_rows=2) as writer:
        # when three rejects arrive, one with a very long user id
        writer.add(2, "user_id_too_long", "too long", {"user_id": "x" * 1000, "event_time": "2024-03-01"})
        writer.add(3, "bad_value", "not a number", None)
        writer.add(4, "bad_value", "not a number", None)

        # then all are counted, two are written, and fields are cut to 256 characters
        rows = list(csv.DictReader(io.StringIO(writer.to_bytes().decode())))
        assert (writer.count, writer.written, writer.truncated) == (3, 2, True)
        assert writer.by_reason == {"user_id_too_long": 1, "bad_value": 2}
        assert len(rows[0]["user_id"]) == 256 and rows[1]["user_id"] == ""
        assert list(rows[0]) == ["line", "reason", "detail", "user_id", "event_time", "event_type", "value"]


def test_reason_codes_are_stable_and_every_reason_has_a_detail() -> None:
    fields = {"user_id": " " + "u" * 200, "event_time": "1960-01-01", "event_type": "", "value": "-3"}

    assert [CODE[reason] for reason in REJECT_REASONS] == list(range(1, len(REJECT_REASONS) + 1))
    assert REJECT_REASONS[:3] == ("bad_encoding", "malformed_row", "bad_json")
    assert detail("user_id_too_long", fields) == "user_id has 200 characters; at most 128 are allowed"
    assert detail("bad_event_time", fields) == "event_time '1960-01-01' is not an ISO 8601 date or date-time"
    assert detail("value_out_of_range", fields) == "value '-3' is out of range; at most 1e+09 either way is accepted"
    assert all(detail(reason, fields) for reason in REJECT_REASONS)


def test_long_values_are_shortened_in_details() -> None:
    assert detail("bad_value", {"value": "9" * 100}) == f"value '{'9' * 56}... is not a number"
