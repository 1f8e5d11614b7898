"""CSV rows: header layouts and delimiters, quoted records, irregular rows, and locale columns."""

from __future__ import annotations

import io

import numpy as np
import pytest

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest import read_events
from chalicelib.ingest.csv_rows import Layout, header_layout
from chalicelib.scoring.events import TYPE_CODE
from tests.unit.ingest.conftest import HEADER, MARCH_1, read, reasons_by_line, rejects


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


def test_a_stray_carriage_return_rejects_only_its_row() -> None:
    data = HEADER + "u1,2024-03-01,login,\nu2,2024-03-01,lo\rgin,\nu3,2024-03-01,login,\n"

    result = read(data)

    assert result.events.user_ids == ["u1", "u3"]
    assert reasons_by_line(result) == {3: "malformed_row"}


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


def test_a_locale_column_gives_each_user_the_locale_tag_of_their_latest_row():
    # rows out of time order; tags are kept whole in BCP 47's spelling; non-tags and empty cells are ignored,
    # not rejected
    text = (
        "user_id,event_time,event_type,value,locale\n"
        "u1,2026-01-02,login,,zh_cn\n"
        "u1,2026-01-01,login,,en-US\n"
        "u2,2026-01-01,login,,pt_BR.UTF-8\n"
        "u3,2026-01-01,login,,\n"
        "u4,2026-01-03,login,,EN\n"
        "u5,2026-01-03,login,,<b>zh</b>\n"
        "u6,2026-01-03,login,,C\n"
    )
    result = read_events(io.BytesIO(text.encode()), "events.csv")
    assert result.rows_accepted == 7
    assert {u: loc for u, (_, loc) in result.events.locales.items()} == {"u1": "zh-CN", "u2": "pt-BR", "u4": "en"}


def test_a_repeated_locale_column_is_ignored_like_any_other_column():
    text = "user_id,event_time,event_type,locale,locale\nu1,2026-01-01,login,en,zh\n"
    result = read_events(io.BytesIO(text.encode()), "events.csv")
    assert result.rows_accepted == 1 and result.events.locales == {}


def test_a_header_gives_the_delimiter_and_where_each_field_lives() -> None:
    layout = header_layout(" Locale ;EVENT_TIME;user_id;notes;event_type", "in.csv", 1)

    assert layout == Layout(delimiter=";", ncols=5, user=2, time=1, type=4, value=None, locale=0)
    assert layout.min_fields == 5
    assert layout.fields(["sv", "2024-03-01", "u1"]) == {"user_id": "u1", "event_time": "2024-03-01"}


def test_a_header_missing_columns_names_them_from_its_most_complete_split() -> None:
    with pytest.raises(UnreadableFileError) as info:
        header_layout("user_id;event_time;value", "in.csv", 3)

    assert info.value.reason == "header lacks required column(s): event_type"
    assert (info.value.line, info.value.detail) == (3, "found: user_id, event_time, value")


def test_a_short_row_that_reaches_every_required_column_is_kept_and_a_longer_one_is_not() -> None:
    # given a header with two optional columns after the required ones
    data = "user_id,event_time,event_type,value,locale\nu1,2024-03-01,login\nu2,2024-03-01,login,,en,extra\n"

    # when it is read
    result = read(data)

    # then the short row is an event and the long one is malformed
    assert result.events.user_ids == ["u1"]
    assert reasons_by_line(result) == {3: "malformed_row"}
