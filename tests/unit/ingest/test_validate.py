"""Validation: each rule a row can break, its reason and line, and the events the good rows become."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.ingest import REJECT_REASONS
from chalicelib.scoring.events import MAX_USER_ID_LENGTH, TYPE_CODE
from tests.unit.ingest.conftest import (
    HEADER,
    MARCH_1,
    assert_events_are,
    file_text,
    read,
    reasons_by_line,
    rejects,
    user_of_each_event,
    valid_rows,
)


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
    text = file_text([fields for fields, _ in rows], as_jsonl)

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
    assert_events_are(result, valid)
    assert (result.events.time >= 0).all()
    assert not (np.abs(result.events.value) > 1e9).any()
