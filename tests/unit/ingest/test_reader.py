"""Behaviour-file reader: formats, compression, per-row rejects with line numbers, and whole-file errors."""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest import (
    REJECT_REASONS,
    ReadResult,
    RejectWriter,
    parse_timestamp,
    read_event_file,
    read_events,
)
from chalicelib.scoring.events import EVENT_TYPES, MAX_USER_ID_LENGTH, TYPE_CODE

HEADER = "user_id,event_time,event_type,value\n"
MARCH_1 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


class ShortReadStream:
    """Like botocore's StreamingBody: read(n) only, no seek or peek, and it returns short reads."""

    def __init__(self, data: bytes, most: int = 7) -> None:
        self._data = data
        self._pos = 0
        self._most = most

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size is None or size < 0 else min(size, self._most)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk


def read(data: bytes | str, name: str = "events.csv", **kwargs: object) -> ReadResult:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return read_events(io.BytesIO(raw), name, **kwargs)  # type: ignore[arg-type]


def rejects(result: ReadResult) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(result.rejects.to_bytes().decode("utf-8"))))


def reasons_by_line(result: ReadResult) -> dict[int, str]:
    return {int(row["line"]): row["reason"] for row in rejects(result)}


def user_of_each_event(result: ReadResult) -> list[str]:
    return [result.events.user_ids[i] for i in result.events.user_index]


# ------------------------------------------------------------------------------------------- formats


def test_csv_rows_become_events_in_columns_with_utc_epoch_seconds() -> None:
    # given a plain CSV with two users
    data = HEADER + "u1,2024-03-01T00:00:00Z,login,\nu2,2024-03-01T00:00:10Z,purchase,12.5\nu1,2024-03-02,session,3\n"

    # when it is read
    result = read(data)

    # then every row is an event with the right columns and dtypes
    events = result.events
    assert (result.rows_read, result.rows_accepted, result.rows_rejected) == (3, 3, 0)
    assert events.user_ids == ["u1", "u2"]
    assert events.user_index.tolist() == [0, 1, 0]
    assert events.time.tolist() == [MARCH_1, MARCH_1 + 10, MARCH_1 + 86400]
    assert events.type_code.tolist() == [TYPE_CODE["login"], TYPE_CODE["purchase"], TYPE_CODE["session"]]
    assert np.isnan(events.value[0]) and events.value[1:].tolist() == [12.5, 3.0]
    assert (events.user_index.dtype, events.time.dtype, events.type_code.dtype, events.value.dtype) == (
        np.int32,
        np.float64,
        np.int8,
        np.float64,
    )
    assert rejects(result) == []


def test_jsonl_rows_become_the_same_events_as_csv() -> None:
    # given the same events as CSV and as JSON Lines (numbers or strings as values, blank lines between)
    csv_text = HEADER + "u1,2024-03-01T00:00:00Z,login,\nu2,2024-03-01,purchase,12.5\nu1,2024-03-02,refund,-4\n"
    jsonl = (
        '{"user_id": "u1", "event_time": "2024-03-01T00:00:00Z", "event_type": "login", "value": null}\n'
        "\n"
        '{"user_id": "u2", "event_time": "2024-03-01", "event_type": "purchase", "value": 12.5}\n'
        '  {"user_id": "u1", "event_time": "2024-03-02", "event_type": "refund", "value": "-4"}  \r\n'
    )

    # when both are read
    from_csv, from_json = read(csv_text), read(jsonl, "events.jsonl")

    # then they hold the same events, and blank lines are not rows
    assert from_json.rows_read == 3
    assert from_json.events.user_ids == from_csv.events.user_ids
    for column in ("user_index", "time", "type_code", "value"):
        np.testing.assert_array_equal(getattr(from_json.events, column), getattr(from_csv.events, column))


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("upload-1234", HEADER + "u1,2024-03-01,login,\n"),
        ("upload-1234", '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"}\n'),
        ("events.jsonl.gz", '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"}\n'),
        ("events.csv.gz", HEADER + "u1,2024-03-01,login,\n"),
    ],
)
def test_gzip_is_detected_by_magic_bytes_and_format_by_inner_name_or_content(name: str, body: str) -> None:
    # given a gzip-compressed file, possibly with a name that says nothing
    data = gzip.compress(body.encode())

    # when it is read
    result = read(data, name)

    # then it is decompressed and parsed as what it contains
    assert result.rows_accepted == 1
    assert result.events.user_ids == ["u1"]


def test_explicit_format_wins_over_the_file_name() -> None:
    # given JSON Lines under a .csv name
    body = '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"}\n'

    # when the caller says it is JSON Lines
    result = read(body, "misnamed.csv", fmt="jsonl")

    # then it is read as JSON Lines
    assert result.events.user_ids == ["u1"]


def test_utf8_bom_and_crlf_line_endings_are_read_transparently() -> None:
    # given a file saved by a spreadsheet: BOM, CRLF, and a last line without a line break
    data = "\ufeffuser_id,event_time,event_type,value\r\nu1,2024-03-01,login,\r\nu2,2024-03-01,purchase,7"

    # when it is read
    result = read(data)

    # then the BOM is not part of the first column name and no field keeps a carriage return
    assert result.events.user_ids == ["u1", "u2"]
    assert result.events.value[1] == 7.0


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_sniffed_from_the_header(delimiter: str) -> None:
    # given a file using another delimiter
    data = delimiter.join(["user_id", "event_time", "event_type", "value"]) + "\n"
    data += delimiter.join(["u1", "2024-03-01", "purchase", "3.5"]) + "\n"

    # when it is read
    result = read(data, "export.txt")

    # then the fields are split on that delimiter
    assert result.events.user_ids == ["u1"]
    assert result.events.value.tolist() == [3.5]


def test_quoted_fields_may_hold_delimiters_and_line_breaks_and_later_line_numbers_stay_physical() -> None:
    # given a record whose quoted field spans two lines, followed by a bad row
    data = HEADER + 'u1,2024-03-01,login,\n"u,2",2024-03-01,"feature\nuse",\nu3,yesterday,login,\n'

    # when it is read
    result = read(data)

    # then the quoted record is one event and the bad row is reported at its physical line (5, not 4)
    assert result.events.user_ids == ["u1", "u,2"]
    assert result.events.type_code.tolist() == [TYPE_CODE["login"], TYPE_CODE["other"]]
    assert reasons_by_line(result) == {5: "bad_event_time"}


def test_header_names_match_ignoring_case_and_spaces_and_other_columns_are_ignored() -> None:
    # given a header in another order, with odd case, spaces and extra columns
    data = " Country , EVENT_TYPE,Value ,User_ID,Event_Time,notes\nSE,login,,u1,2024-03-01,hello\n"

    # when it is read
    result = read(data)

    # then the columns are found by name
    assert result.events.user_ids == ["u1"]
    assert result.events.type_code.tolist() == [TYPE_CODE["login"]]


def test_value_column_is_optional() -> None:
    result = read("user_id,event_time,event_type\nu1,2024-03-01,login\n")

    assert result.rows_accepted == 1
    assert np.isnan(result.events.value[0])


def test_purchases_only_file_is_valid() -> None:
    # given a log holding nothing but purchases
    data = HEADER + "".join(f"u{i % 3},2024-03-0{1 + i % 9},purchase,{i}.99\n" for i in range(20))

    # when it is read
    result = read(data)

    # then every purchase is an event
    assert result.rows_accepted == 20
    assert set(result.events.type_code.tolist()) == {TYPE_CODE["purchase"]}


def test_event_types_are_trimmed_and_lower_cased_and_unknown_ones_are_other() -> None:
    data = HEADER + "u1,2024-03-01, Purchase ,1\nu1,2024-03-01,LOGIN,\nu1,2024-03-01,webinar_attended,\n"

    result = read(data)

    assert result.events.type_code.tolist() == [TYPE_CODE["purchase"], TYPE_CODE["login"], TYPE_CODE["other"]]


def test_refund_values_are_taken_as_their_absolute_amount() -> None:
    result = read(HEADER + "u1,2024-03-01,refund,-20\nu1,2024-03-01,refund,5\n")

    assert result.events.value.tolist() == [20.0, 5.0]


def test_user_ids_are_stripped_and_unique_in_order_of_first_accepted_event() -> None:
    # given "b" first appearing in a rejected row, and "a" padded with spaces
    data = HEADER + "b,never,login,\n a ,2024-03-01,login,\nb,2024-03-02,login,\na,2024-03-03,login,\n"

    # when it is read
    result = read(data)

    # then only users with accepted events are listed, in the order of their first accepted event
    assert result.events.user_ids == ["a", "b"]
    assert user_of_each_event(result) == ["a", "b", "a"]


def test_a_streaming_body_without_seek_and_with_short_reads_is_read_like_a_file() -> None:
    # given an S3-like body that returns a few bytes per read, gzip-compressed
    body = HEADER + "".join(f"user{i},2024-03-01T00:00:{i:02d}Z,login,\n" for i in range(50))
    stream = ShortReadStream(gzip.compress(body.encode()))

    # when it is read
    result = read_events(stream, "s3://bucket/incoming/delta")  # type: ignore[arg-type]

    # then nothing is lost
    assert result.rows_accepted == 50
    assert result.events.time[-1] == MARCH_1 + 49


def test_tiny_chunks_give_the_same_result_as_the_default() -> None:
    # given a file mixing plain, quoted, short, blank and bad rows
    rows = [
        "u1,2024-03-01,login,",
        "",
        "u2,2024-03-01T10:00:00+02:00,purchase,5",
        "u3,2024-03-01",
        '"u4",2024-03-01,"a\nb",',
        "u5,2024-13-01,login,",
        "u6,2024-03-01,session",
    ]
    data = HEADER + "\n".join(rows) + "\n"

    # when it is read with the default pieces and with one row at a time
    default, tiny = read(data), read(data, chunk_rows=1)

    # then both agree on everything
    assert default.events.user_ids == tiny.events.user_ids == ["u1", "u2", "u4", "u6"]
    np.testing.assert_array_equal(default.events.time, tiny.events.time)
    assert reasons_by_line(default) == reasons_by_line(tiny) == {5: "malformed_row", 8: "bad_event_time"}


# ------------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("text", "seconds_after_march_1"),
    [
        ("2024-03-01", 0),
        ("2024-03-01T00:00:00", 0),
        ("2024-03-01 00:00:00", 0),
        ("2024-03-01T00:00:00Z", 0),
        ("2024-03-01T01:00:00+01:00", 0),
        ("2024-03-01T01:00:00+0100", 0),
        ("2024-03-01T01:00:00+01", 0),
        ("2024-02-29T18:30:00-05:30", 0),
        ("2024-03-01T00:00:00.25Z", 0.25),
        ("2024-03-01T00:00:00.123456789", 0.123456),
        ("2024-03-01T00:01", 60),
        ("2024-03-01t00:00:00z", 0),
        (" 2024-03-01T00:00:00Z ", 0),
    ],
)
def test_timestamps_in_iso_forms_are_converted_to_utc_epoch_seconds(text: str, seconds_after_march_1: float) -> None:
    # given one row with the timestamp in some ISO 8601 form
    result = read(HEADER + f"u1,{text},login,\n")

    # then it is read as UTC epoch seconds, the same as parse_timestamp gives
    assert result.events.time.tolist() == [MARCH_1 + seconds_after_march_1]
    assert parse_timestamp(text) == MARCH_1 + seconds_after_march_1


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2024-13-01", "2024-02-30", "2024-03-01T24:00:00", "2024-03-01T12:00:00+25:00", "2024", "now"],
)
def test_parse_timestamp_raises_value_error_on_anything_else(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


# ------------------------------------------------------------------------------------------- rejects


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (",2024-03-01,login,", "missing_user_id"),
        ("   ,2024-03-01,login,", "missing_user_id"),
        ("x" * (MAX_USER_ID_LENGTH + 1) + ",2024-03-01,login,", "user_id_too_long"),
        ("u\x01,2024-03-01,login,", "user_id_control_chars"),
        ("u\x7f,2024-03-01,login,", "user_id_control_chars"),
        ("u1,,login,", "missing_event_time"),
        ("u1,03/01/2024,login,", "bad_event_time"),
        ("u1,2024-02-30,login,", "bad_event_time"),
        ("u1,2024-03-01,,", "missing_event_type"),
        ("u1,2024-03-01,purchase,12,50", "malformed_row"),
        ("u1,2024-03-01,purchase,twelve", "bad_value"),
        ("u1,2024-03-01,purchase,nan", "nonfinite_value"),
        ("u1,2024-03-01,purchase,-inf", "nonfinite_value"),
        ("u1,2024-03-01,purchase,-3", "negative_value"),
        ("u1,2024-03-01", "malformed_row"),
        ("u1,1969-12-31T23:59:59Z,login,", "event_time_out_of_range"),
        ("u1,1970-01-01T01:00:00+02:00,login,", "event_time_out_of_range"),
        ("u1,0001-01-01,login,", "event_time_out_of_range"),
        ("u1,2024-03-01,purchase,1e12", "value_out_of_range"),
        ("u1,2024-03-01,refund,-1000000001", "value_out_of_range"),
        ("u1,2024-03-01,purchase,-1e10", "value_out_of_range"),
    ],
)
def test_each_bad_csv_row_is_rejected_with_its_reason_and_line(row: str, reason: str) -> None:
    # given a good row, the bad row on line 3, and another good row
    data = HEADER + "ok1,2024-03-01,login,\n" + row + "\nok2,2024-03-01,login,\n"

    # when it is read
    result = read(data)

    # then only the bad row is rejected, at line 3, with the reason code and a human detail
    assert result.events.user_ids == ["ok1", "ok2"]
    [reject] = rejects(result)
    assert (reject["line"], reject["reason"]) == ("3", reason)
    assert reject["detail"]
    assert result.rejects.by_reason == {reason: 1}


def test_events_later_than_not_after_are_rejected_as_future_event_time() -> None:
    # given a limit of midnight, 1 March 2024 UTC
    data = (
        HEADER + "u1,2024-03-01T00:00:00Z,login,\nu1,2024-03-01T00:00:01Z,login,\nu1,2024-03-01T01:00:00+02:00,login,\n"
    )

    # when the file is read with that limit
    result = read(data, not_after=MARCH_1)

    # then only the event after it is rejected (the offset one is 23:00 the day before)
    assert result.events.time.tolist() == [MARCH_1, MARCH_1 - 3600]
    [reject] = rejects(result)
    assert (reject["line"], reject["reason"]) == ("3", "future_event_time")
    assert "2024-03-01T00:00:00Z" in reject["detail"]


def test_the_epoch_and_values_of_a_billion_are_the_edges_of_the_accepted_range() -> None:
    # given an event at exactly 1970-01-01T00:00:00Z and values of exactly plus and minus a billion
    data = HEADER + "u1,1970-01-01,purchase,1e9\nu1,1970-01-01T00:00:00Z,refund,-1000000000\n"

    # when it is read
    result = read(data)

    # then both rows are events
    assert result.rows_rejected == 0
    assert result.events.time.tolist() == [0.0, 0.0]
    assert result.events.value.tolist() == [1e9, 1e9]


def test_out_of_range_rejects_say_why() -> None:
    result = read(HEADER + "u1,1969-07-20T20:17:00Z,login,\nu1,2024-03-01,purchase,5e15\n")

    first, second = rejects(result)
    assert first["reason"] == "event_time_out_of_range" and "before 1970-01-01" in first["detail"]
    assert second["reason"] == "value_out_of_range" and "1e+09" in second["detail"]


def test_json_lines_values_out_of_range_are_rejected_like_csv() -> None:
    data = '{"user_id": "u1", "event_time": "1960-01-01", "event_type": "login"}\n'
    data += '{"user_id": "u1", "event_time": "2024-03-01", "event_type": "purchase", "value": 1e300}\n'

    result = read(data, "events.jsonl")

    assert reasons_by_line(result) == {1: "event_time_out_of_range", 2: "value_out_of_range"}


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


def test_a_row_with_invalid_utf8_is_rejected_as_bad_encoding_and_the_rest_is_read() -> None:
    # given one row holding a byte that is not UTF-8 (and a legitimate U+FFFD elsewhere)
    data = (HEADER + "u1,2024-03-01,login,\n").encode() + b"u\xff2,2024-03-01,login,\n"
    data += "u\ufffd3,2024-03-01,login,\n".encode()

    # when it is read
    result = read(data)

    # then only the undecodable row is rejected, shown with a replacement character
    assert result.events.user_ids == ["u1", "u\ufffd3"]
    [reject] = rejects(result)
    assert (reject["line"], reject["reason"], reject["user_id"]) == ("3", "bad_encoding", "u\ufffd2")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "bad_json"),
        ('{"user_id": "u1", "event_time": "2024-03-01"', "bad_json"),
        ('["u1", "2024-03-01", "login"]', "bad_json"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": "login"} trailing', "bad_json"),
        ('{"user_id": null, "event_time": "2024-03-01", "event_type": "login"}', "missing_user_id"),
        ('{"user_id": ["u1"], "event_time": "2024-03-01", "event_type": "login"}', "malformed_row"),
        ('{"user_id": "u1", "event_time": 1709251200, "event_type": "login"}', "bad_event_time"),
        ('{"user_id": "u1", "event_type": "login"}', "missing_event_time"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": 3}', "malformed_row"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": "purchase", "value": true}', "bad_value"),
        ('{"user_id": "u1", "event_time": "2024-03-01", "event_type": "purchase", "value": NaN}', "nonfinite_value"),
        ('{"user_id": "\\udc80", "event_time": "2024-03-01", "event_type": "login"}', "bad_encoding"),
    ],
)
def test_each_bad_json_line_is_rejected_with_its_reason_and_line(line: str, reason: str) -> None:
    good = '{"user_id": "ok", "event_time": "2024-03-01", "event_type": "login"}\n'

    result = read(good + "\n" + line + "\n" + good, "events.ndjson")

    assert reasons_by_line(result) == {3: reason}
    assert result.rows_read == 3 and result.rows_accepted == 2


def test_json_keys_match_ignoring_case_and_integer_user_ids_become_strings() -> None:
    data = (
        '{"User_ID": 42, " Event_Time": "2024-03-01", "EVENT_TYPE": "purchase", "Value": 1}\n'
        '{"user_id": "u2", "event_time": "2024-03-01", "event_type": "purchase", "Value": 2, "shop": "x"}\n'
    )

    result = read(data, "e.jsonl")

    assert result.events.user_ids == ["42", "u2"]
    assert result.events.value.tolist() == [1.0, 2.0]


def test_a_stray_carriage_return_rejects_only_its_row() -> None:
    data = HEADER + "u1,2024-03-01,login,\nu2,2024-03-01,lo\rgin,\nu3,2024-03-01,login,\n"

    result = read(data)

    assert result.events.user_ids == ["u1", "u3"]
    assert reasons_by_line(result) == {3: "malformed_row"}


def test_rows_read_always_equals_accepted_plus_rejected_and_rejects_are_in_line_order() -> None:
    # given a file where bad rows of several kinds are spread among good ones
    bad = [",2024-03-01,login,", "u,2024-03-01,login,1,2", "u,x,login,", "u,2024-03-01,purchase,-1", "u,2024"]
    lines = [bad[i % 5] if i % 3 == 0 else f"u{i},2024-03-01,login," for i in range(300)]

    # when it is read in small pieces
    result = read(HEADER + "\n".join(lines) + "\n", chunk_rows=16)

    # then the accounting adds up and the reject file is sorted by line
    assert result.rows_read == result.rows_accepted + result.rows_rejected == 300
    assert result.rows_rejected == 100 == result.rejects.count
    assert [int(r["line"]) for r in rejects(result)] == [2 + i for i in range(0, 300, 3)]


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


# ------------------------------------------------------------------------------------------- whole-file


@pytest.mark.parametrize("data", [b"", b"\n\n  \r\n", b"user_id,event_time,event_type\n", b"\xef\xbb\xbf"])
def test_empty_file_blank_lines_and_header_only_yield_zero_rows(data: bytes) -> None:
    result = read(data)

    assert (result.rows_read, len(result.events), result.events.user_ids) == (0, 0, [])


def test_missing_required_column_raises_naming_it() -> None:
    with pytest.raises(UnreadableFileError, match="event_type") as info:
        read("user_id,event_time,value\nu1,2024-03-01,3\n", "in.csv")

    assert (info.value.source, info.value.line) == ("in.csv", 1)


def test_a_header_that_does_not_split_hints_at_the_delimiter() -> None:
    with pytest.raises(UnreadableFileError, match="delimiter"):
        read("user_id:event_time:event_type\nu1:2024-03-01:login\n")


def test_a_duplicated_required_column_raises() -> None:
    with pytest.raises(UnreadableFileError, match=r"user_id.*more than once"):
        read("user_id,event_time,event_type,user_id\n")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04" + bytes(100), "zip"),
        (b"\x00\x01\x02\x03" * 100, "binary"),
        ("user_id,event_time,event_type\n".encode("utf-16"), "UTF-16"),
        (bytes(range(128, 256)) * 20, "binary"),
        (b'[{"user_id": "u1"}]', "JSON array"),
    ],
)
def test_content_that_is_not_csv_or_json_lines_raises(data: bytes, message: str) -> None:
    with pytest.raises(UnreadableFileError, match=message):
        read(data, "upload.bin")


def test_truncated_gzip_raises_even_after_rows_were_read() -> None:
    # given a gzip file cut short, long enough that rows were decoded before the cut
    body = HEADER + "".join(f"user{i},2024-03-01T00:00:00Z,login,\n" for i in range(20000))
    data = gzip.compress(body.encode())[:-200]

    with pytest.raises(UnreadableFileError, match="truncated") as info:
        read(data, "events.csv.gz", chunk_rows=64)

    assert "after line" in info.value.reason


def test_corrupt_gzip_raises() -> None:
    data = bytearray(gzip.compress((HEADER + "u1,2024-03-01,login,\n" * 500).encode()))
    data[30:60] = b"\xff" * 30

    with pytest.raises(UnreadableFileError, match="gzip"):
        read(bytes(data), "events.csv.gz")


def test_a_gzip_bomb_stops_at_the_decompression_limit() -> None:
    # given a gzip file of 8 MiB of rows that compresses to a few KiB, read as a stream with short reads
    body = (HEADER + "u1,2024-03-01T00:00:00Z,login,\n" * 250_000).encode()
    data = gzip.compress(body)
    assert len(data) < len(body) // 100

    # when it is read with a limit of 1 MiB
    with pytest.raises(UnreadableFileError, match=r"decompresses to more than 1048576 bytes"):
        read_events(ShortReadStream(data, most=4096), "bomb.csv.gz", max_decompressed_bytes=1 << 20)  # type: ignore[arg-type]

    # then the same file is read whole under a limit it fits in
    result = read(data, "bomb.csv.gz", max_decompressed_bytes=len(body))
    assert result.rows_accepted == 250_000


def test_the_decompression_limit_does_not_apply_to_uncompressed_input(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(HEADER + "u1,2024-03-01,login,\n" * 100)

    assert read_event_file(path, max_decompressed_bytes=64).rows_accepted == 100
    with pytest.raises(ValueError, match="max_decompressed_bytes"):
        read(HEADER, max_decompressed_bytes=0)


def test_read_event_file_reads_a_path_and_a_missing_path_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "u1,2024-03-01,login,\n").encode()))

    assert read_event_file(path).events.user_ids == ["u1"]
    with pytest.raises(UnreadableFileError, match="cannot read"):
        read_event_file(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------- properties

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_id_chars = st.sampled_from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@,;"| éß漢')


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, float]:
    """An ISO timestamp in one of the accepted forms, and its epoch seconds."""
    micros = draw(st.integers(0, 4_102_444_800 * 10**6))  # 1970 .. 2100
    instant = EPOCH + timedelta(microseconds=micros)
    form = draw(st.sampled_from(["date", "naive", "z", "offset", "basic", "frac", "space"]))
    if form == "date":
        return instant.strftime("%Y-%m-%d"), (micros // 86_400_000_000) * 86400.0
    whole = micros - micros % 10**6
    if form == "frac":
        digits = draw(st.integers(1, 9))
        fraction = f"{micros % 10**6:06d}{draw(st.integers(0, 999)):03d}"[:digits]
        exact = whole + int(fraction[:6].ljust(6, "0"))
        return instant.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z", exact / 1e6
    if form in ("offset", "basic"):
        minutes = draw(st.integers(-14 * 60, 14 * 60))
        local = (instant + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")
        sign, size = ("+" if minutes >= 0 else "-"), abs(minutes)
        colon = ":" if form == "offset" else ""
        return f"{local}{sign}{size // 60:02d}{colon}{size % 60:02d}", whole / 1e6
    text = instant.strftime("%Y-%m-%d %H:%M:%S" if form == "space" else "%Y-%m-%dT%H:%M:%S")
    return text + ("Z" if form == "z" else ""), whole / 1e6


@st.composite
def valid_rows(draw: st.DrawFn) -> tuple[list[str], tuple[str, float, int, float | None]]:
    """A valid row's fields, and the event it must become."""
    padded = draw(st.sampled_from(["", " "])) + draw(st.text(_id_chars, min_size=1, max_size=20).filter(str.strip))
    user = padded.strip()
    when, seconds = draw(timestamps())
    kind = draw(st.sampled_from([*EVENT_TYPES[:-1], "Webinar"]))
    shown_kind = draw(st.sampled_from([kind, kind.upper(), f" {kind}"]))
    value = draw(st.none() | st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**6))
    if kind == "refund" and value is not None and draw(st.booleans()):
        value = -value
    text_value = "" if value is None else repr(value)
    expected_value = None if value is None else abs(float(value)) if kind == "refund" else float(value)
    return [padded, when, shown_kind, text_value], (user, seconds, TYPE_CODE.get(kind.lower(), 11), expected_value)


INVALID_ROWS = {
    "missing_user_id": ["", "2024-03-01", "login", ""],
    "user_id_too_long": ["u" * 129, "2024-03-01", "login", ""],
    "user_id_control_chars": ["u\x02", "2024-03-01", "login", ""],
    "missing_event_time": ["u", " ", "login", ""],
    "bad_event_time": ["u", "2024-02-30T10:00:00Z", "login", ""],
    "missing_event_type": ["u", "2024-03-01", "", ""],
    "bad_value": ["u", "2024-03-01", "purchase", "1,5"],
    "nonfinite_value": ["u", "2024-03-01", "purchase", "inf"],
    "negative_value": ["u", "2024-03-01", "session", "-2"],
    "malformed_row": ["u", "2024-03-01", "login", "", "extra"],
    "bad_encoding": ["u\udcff", "2024-03-01", "login", ""],  # written back as the undecodable byte 0xff
    "blank": [],  # a blank line: not a row at all
}


def _to_jsonl(fields: list[str]) -> str:
    if not fields:
        return ""
    if len(fields) > 4:
        return "{broken"
    if fields[0].endswith("\udcff"):
        return '{"user_id": "u\udcff", "event_time": "2024-03-01", "event_type": "login"}'
    row = dict(zip(("user_id", "event_time", "event_type", "value"), fields, strict=True))
    return json.dumps(row)


def _file_text(rows: list, as_jsonl: bool) -> str:
    """Return rows of field values as a whole behaviour file: CSV with the header, or JSON Lines."""
    lines = []
    for fields in rows:
        if as_jsonl:
            lines.append(_to_jsonl(fields))
        else:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(fields)
            lines.append(out.getvalue().rstrip("\n"))
    return ("" if as_jsonl else HEADER) + "".join(line + "\n" for line in lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.one_of(valid_rows(), st.sampled_from(sorted(INVALID_ROWS))),
        max_size=40,
    ),
    chunk_rows=st.sampled_from([1, 3, 65536]),
    as_jsonl=st.booleans(),
    gzipped=st.booleans(),
)
def test_any_mix_of_rows_is_fully_accounted_and_every_valid_row_is_read_exactly(
    rows: list, chunk_rows: int, as_jsonl: bool, gzipped: bool
) -> None:
    # given a file mixing valid rows with rows that break one rule each
    text = _file_text([INVALID_ROWS[row] if isinstance(row, str) else row[0] for row in rows], as_jsonl)
    data = text.encode("utf-8", "surrogateescape")
    data = gzip.compress(data) if gzipped else data

    # when it is read
    result = read_events(io.BytesIO(data), "upload", fmt="jsonl" if as_jsonl else "csv", chunk_rows=chunk_rows)

    # then every row is either an event or a reject, at its own line, for the reason it was built with
    first_line = 1 if as_jsonl else 2
    expected_rejects = {
        first_line + i: ("bad_json" if as_jsonl and row == "malformed_row" else row)
        for i, row in enumerate(rows)
        if isinstance(row, str) and row != "blank"
    }
    valid = [row[1] for row in rows if not isinstance(row, str)]
    assert result.rows_read == len(rows) - rows.count("blank") == result.rows_accepted + result.rows_rejected
    assert reasons_by_line(result) == expected_rejects
    assert set(expected_rejects.values()) <= set(REJECT_REASONS)
    assert user_of_each_event(result) == [user for user, _, _, _ in valid]
    assert result.events.time.tolist() == [seconds for _, seconds, _, _ in valid]
    assert result.events.type_code.tolist() == [code for _, _, code, _ in valid]
    expected_values = np.array([np.nan if v is None else v for _, _, _, v in valid], dtype=np.float64)
    np.testing.assert_array_equal(result.events.value, expected_values)


@st.composite
def pre_epoch_times(draw: st.DrawFn) -> str:
    """An ISO timestamp before 1970-01-01T00:00:00Z, in one of the accepted forms."""
    when = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(1969, 12, 31, 23, 59, 59)))
    form = draw(st.sampled_from(["date", "z", "space", "ahead_of_utc"]))
    if form == "date":
        return when.date().isoformat()
    if form == "space":
        return when.isoformat(sep=" ", timespec="seconds")
    # A positive offset only moves the instant earlier, so it stays before the epoch.
    return when.isoformat(timespec="seconds") + ("Z" if form == "z" else "+05:30")


@st.composite
def out_of_range_rows(draw: st.DrawFn) -> tuple[list[str], str]:
    """A row that is wrong only in its range (or in both, where time wins), and the reason it must get."""
    fault = draw(st.sampled_from(["time", "value", "both"]))
    kind = draw(st.sampled_from(["purchase", "refund", "session", "login"]))
    when = draw(pre_epoch_times()) if fault in ("time", "both") else "2024-03-01T00:00:00Z"
    value = ""
    if fault in ("value", "both"):
        size = draw(st.floats(min_value=1e9, max_value=1e300).filter(lambda v: v > 1e9))
        value = repr(size if draw(st.booleans()) else -size)
    elif draw(st.booleans()):
        value = "12.5"
    reason = "value_out_of_range" if fault == "value" else "event_time_out_of_range"
    return [draw(st.sampled_from(["u1", "u2", " u3"])), when, kind, value], reason


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.one_of(valid_rows(), out_of_range_rows()), max_size=30),
    chunk_rows=st.sampled_from([1, 4, 65536]),
    as_jsonl=st.booleans(),
)
def test_rows_out_of_range_mixed_with_valid_ones_are_each_rejected_with_their_reason(
    rows: list, chunk_rows: int, as_jsonl: bool
) -> None:
    # given valid rows mixed with rows dated before 1970 or holding values beyond a billion
    text = _file_text([fields for fields, _ in rows], as_jsonl)

    # when it is read
    result = read(text, "upload", fmt="jsonl" if as_jsonl else "csv", chunk_rows=chunk_rows)

    # then every row is accounted for, each out-of-range row rejected at its line for its reason
    first_line = 1 if as_jsonl else 2
    expected = {first_line + i: row[1] for i, row in enumerate(rows) if isinstance(row[1], str)}
    valid = [row[1] for row in rows if not isinstance(row[1], str)]
    assert result.rows_read == len(rows) == result.rows_accepted + result.rows_rejected
    assert result.rows_rejected == len(expected)
    assert reasons_by_line(result) == expected
    assert set(expected.values()) <= set(REJECT_REASONS)
    assert user_of_each_event(result) == [user for user, _, _, _ in valid]
    assert result.events.time.tolist() == [seconds for _, seconds, _, _ in valid]
    assert (result.events.time >= 0).all()
    assert not (np.abs(result.events.value) > 1e9).any()


def test_read_result_and_errors_survive_a_process_boundary():
    # GIVEN a result with rejects, and an unreadable-file error (the CLI reads in a worker process)
    data = b"user_id,event_time,event_type\nu1,2026-01-01,login\n,2026-01-01,login\n"
    result = read_events(io.BytesIO(data), "mem.csv")
    error = UnreadableFileError("f.csv.gz", "corrupt gzip", 3)

    # WHEN both are pickled and unpickled
    again = pickle.loads(pickle.dumps(result))
    error_again = pickle.loads(pickle.dumps(error))

    # THEN nothing is lost
    assert again.rejects.to_bytes() == result.rejects.to_bytes()
    assert again.rejects.by_reason == {"missing_user_id": 1}
    assert again.rows_read == 2 and again.events.user_ids == ["u1"]
    again.rejects.add(9, "bad_value", "x", None)
    assert again.rejects.to_bytes().count(b"\n") == 3
    assert (error_again.source, error_again.reason, error_again.line, str(error_again)) == (
        "f.csv.gz",
        "corrupt gzip",
        3,
        "f.csv.gz:3: corrupt gzip",
    )


def test_a_locale_column_gives_each_user_the_locale_of_their_latest_row():
    # rows out of time order; unknown locales and empty cells are ignored, not rejected
    text = (
        "user_id,event_time,event_type,value,locale\n"
        "u1,2026-01-02,login,,zh_CN\n"
        "u1,2026-01-01,login,,en-US\n"
        "u2,2026-01-01,login,,fr\n"
        "u3,2026-01-01,login,,\n"
        "u4,2026-01-03,login,,EN\n"
    )
    result = read_events(io.BytesIO(text.encode()), "events.csv")
    assert result.rows_accepted == 5
    assert {u: loc for u, (_, loc) in result.events.locales.items()} == {"u1": "zh", "u4": "en"}


def test_json_lines_carry_a_locale_too():
    lines = (
        '{"user_id": "u1", "event_time": "2026-01-01", "event_type": "login", "locale": "zh-Hans"}\n'
        '{"user_id": "u2", "event_time": "2026-01-01", "event_type": "login", "locale": 5}\n'
    )
    result = read_events(io.BytesIO(lines.encode()), "events.jsonl")
    assert result.rows_accepted == 2
    assert {u: loc for u, (_, loc) in result.events.locales.items()} == {"u1": "zh"}


def test_a_repeated_locale_column_is_ignored_like_any_other_column():
    text = "user_id,event_time,event_type,locale,locale\nu1,2026-01-01,login,en,zh\n"
    result = read_events(io.BytesIO(text.encode()), "events.csv")
    assert result.rows_accepted == 1 and result.events.locales == {}
