"""Entry points: reading paths and streams, every row accounted for, results that cross processes."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest import REJECT_REASONS, read_event_file, read_events
from tests.unit.ingest.conftest import HEADER, assert_events_are, file_text, reasons_by_line, valid_rows


def test_read_event_file_reads_a_path_and_a_missing_path_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "u1,2024-03-01,login,\n").encode()))

    assert read_event_file(path).events.user_ids == ["u1"]
    with pytest.raises(UnreadableFileError, match="cannot read"):
        read_event_file(tmp_path / "nope.csv")


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
    text = file_text([INVALID_ROWS[row] if isinstance(row, str) else row[0] for row in rows], as_jsonl)
    data = text.encode("utf-8", "surrogateescape")
    data = gzip.compress(data) if gzipped else data

    # when it is read
    result = read_events(io.BytesIO(data), "upload", fmt="jsonl" if as_jsonl else "csv", chunk_rows=chunk_rows)

    # then every row is either an event or a reject, at its own line, for the reason it was built with
    expected_rejects = _expected_rejects(rows, as_jsonl)
    valid = [row[1] for row in rows if not isinstance(row, str)]
    assert result.rows_read == len(rows) - rows.count("blank") == result.rows_accepted + result.rows_rejected
    assert reasons_by_line(result) == expected_rejects
    assert set(expected_rejects.values()) <= set(REJECT_REASONS)
    assert_events_are(result, valid)


def _expected_rejects(rows: list, as_jsonl: bool) -> dict[int, str]:
    """Return line -> reason for the invalid rows (named by their reason) among `rows`; blank lines are skipped."""
    first_line = 1 if as_jsonl else 2
    return {
        first_line + i: ("bad_json" if as_jsonl and row == "malformed_row" else row)
        for i, row in enumerate(rows)
        if isinstance(row, str) and row != "blank"
    }


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
