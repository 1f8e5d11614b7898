"""CSV records are tied to the physical lines they span, and a quote that never closes costs only its own line."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.ingest import read_events
from chalicelib.ingest.csv_records import MAX_RECORD_LINES, ends_in_quotes
from tests.unit.ingest.conftest import HEADER, reasons_by_line, rejects

ROW = "u{},2026-01-01T00:00:00Z,login,"


def _needs_another_line(first: list[str], line: str) -> bool | None:
    """Return whether the csv module needs a line after `first + [line]` to finish the record (None: refused)."""
    reader = csv.reader(iter([*first, line, "end\n"]))
    try:
        next(reader)
    except csv.Error:
        return None
    return reader.line_num > len(first) + 1


LINES = st.lists(st.sampled_from(["a", '"', ",", " ", "b", '""', ";"]), max_size=10).map(lambda p: "".join(p) + "\n")


@settings(max_examples=400)
@given(LINES, st.booleans())
def test_whether_a_line_leaves_a_quote_open_is_what_the_csv_module_decides(line: str, inside: bool) -> None:
    expected = _needs_another_line(['"x\n'] if inside else [], line)
    if expected is not None:
        assert ends_in_quotes(line, ",", inside) is expected


def _read(text: str, name: str = "events.csv"):
    return read_events(io.BytesIO(text.encode()), name)


def test_a_quote_that_never_closes_costs_only_its_own_line_whatever_follows():
    # GIVEN a stray quote on line 2, then 6,000 valid rows
    text = "".join([HEADER, 'bad,"2026-01-01,login,\n', *(ROW.format(i) + "\n" for i in range(6000))])
    # WHEN the file is read
    result = _read(text)
    # THEN the stray line alone is rejected, with its number and why, and every valid row is read
    assert (result.rows_read, result.rows_accepted, result.rows_rejected) == (6001, 6000, 1)
    assert reasons_by_line(result) == {2: "malformed_row"}
    assert "still open" in rejects(result)[0]["detail"]
    assert len(result.events.user_ids) == 6000


def test_a_quote_still_open_at_the_end_of_the_file_costs_only_its_line():
    text = "".join([HEADER, ROW.format(1) + "\n", ROW.format(2) + "\n", 'u3,2026-01-01,"login\n', ROW.format(4) + "\n"])
    result = _read(text)
    assert result.rows_accepted == 3 and reasons_by_line(result) == {4: "malformed_row"}
    assert sorted(result.events.user_ids) == ["u1", "u2", "u4"]


def test_a_lone_cr_costs_the_line_it_is_on_and_says_so():
    text = "".join([HEADER, "u1,2026-01-01,login,\ru2,2026-01-01,login,\n", ROW.format(3) + "\n", ROW.format(4) + "\n"])
    result = _read(text)
    assert (result.rows_read, result.rows_accepted) == (3, 2)
    assert reasons_by_line(result) == {2: "malformed_row"}
    assert "carriage return" in rejects(result)[0]["detail"]


def test_a_quoted_field_over_several_lines_is_one_row_and_later_rows_keep_their_line_numbers():
    text = "".join([HEADER, ROW.format(1) + "\n", 'u2,2026-01-01,"log\nin\nhere",\n', "u3,not-a-date,login,\n"])
    result = _read(text)
    assert result.rows_read == 3 and result.rows_accepted == 2
    assert reasons_by_line(result) == {6: "bad_event_time"}  # header 1, u1 2, u2 3-5, u3 6


def test_a_quoted_field_may_span_up_to_the_limit_and_no_further():
    header = "user_id,event_time,event_type,value,note\n"  # a free-text column other columns ignore
    inside = "x\n" * (MAX_RECORD_LINES - 2)
    # the opening line, MAX_RECORD_LINES - 3 more, and the closing line: exactly the limit
    fits = "".join([header, f'u1,2026-01-01,login,,"{inside}x\ny"\n', "u2,2026-01-01,login,,\n"])
    result = _read(fits)
    assert result.rows_accepted == 2 and result.rows_rejected == 0
    too_long = "".join([header, f'u1,2026-01-01,login,,"{inside}x\nx\ny"\n', "u2,2026-01-01,login,,\n"])
    result = _read(too_long)
    # the opening line is refused and every line after it is read again as a row of its own
    assert reasons_by_line(result)[2] == "malformed_row" and "u2" in result.events.user_ids
    assert result.rows_read == result.rows_accepted + result.rows_rejected


HOSTILE_LINES = {
    "stray_quote": 'sq,"2024-03-01,login,',  # opens a quoted field that never closes
    "lone_cr": "cr,2024-03-01,login,\rcr2,2024-03-01,login,",  # an old Mac line end inside a line
    "quote_mid_field": 'mq,2024-03-01,log"in,',  # a literal quote: a valid row of a generic activity
}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.one_of(st.integers(0, 10**6), st.sampled_from(sorted(HOSTILE_LINES))), max_size=60),
    st.sampled_from([1, 7, 65536]),
)
def test_every_physical_line_is_read_or_rejected_under_its_own_number(lines: list, chunk_rows: int) -> None:
    # GIVEN valid rows (by number) mixed with hostile lines
    text = HEADER + "".join(
        (f"v{x},2024-03-01,login,\n" if isinstance(x, int) else HOSTILE_LINES[x] + "\n") for x in lines
    )
    # WHEN the file is read, in chunks of any size
    result = read_events(io.BytesIO(text.encode()), "mix.csv", chunk_rows=chunk_rows)
    # THEN each line is one row read: valid ones (and the mid-field quote) accepted, the others rejected alone
    refused = {2 + i for i, x in enumerate(lines) if x in ("stray_quote", "lone_cr")}
    assert result.rows_read == len(lines) == result.rows_accepted + result.rows_rejected
    assert set(reasons_by_line(result)) == refused
    expected = [f"v{x}" if isinstance(x, int) else "mq" for x in lines if x not in ("stray_quote", "lone_cr")]
    ids = result.events.user_ids
    assert [ids[i] for i in result.events.user_index] == expected
