"""A file's events and users are counted as they stream: past the memory budget the file is refused at once."""

from __future__ import annotations

import io

import pytest

from chalicelib.errors import FileTooLargeError
from chalicelib.ingest import read_events
from chalicelib.ingest.budget import BYTES_PER_EVENT, BYTES_PER_USER, held_bytes
from tests.unit.ingest.conftest import HEADER


class EndlessRows(io.RawIOBase):
    """A stream of valid rows that never ends, counting the bytes handed out."""

    def __init__(self) -> None:
        self.served = 0
        self._row = 0
        self._head = HEADER.encode()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        out = [self._head]
        self._head = b""
        while sum(map(len, out)) < max(size, 1):
            out.append(f"u{self._row % 5000},2026-03-01T10:00:00Z,login,\n".encode())
            self._row += 1
        data = b"".join(out)
        self.served += len(data)
        return data


def test_a_file_past_the_memory_budget_is_refused_while_it_streams_naming_the_limit_and_the_setting():
    # GIVEN a budget of 1 MiB, and a file with no end
    stream = EndlessRows()
    # WHEN it is read THEN it is refused with a reason naming the limit and the setting
    with pytest.raises(FileTooLargeError) as refused:
        read_events(stream, "endless.csv", max_memory_bytes=1 << 20)  # type: ignore[arg-type]
    assert "past the 1 MiB a file may take (FILE_MEMORY_BUDGET_MB" in refused.value.reason
    assert refused.value.status == "too_large"
    # AND it stopped soon after the budget was passed, not at the end of the input
    assert stream.served < 4 << 20


def test_a_file_within_the_budget_is_read_whole():
    body = (HEADER + "".join(f"u{i},2026-03-01,login,\n" for i in range(100))).encode()
    result = read_events(io.BytesIO(body), "ok.csv", max_memory_bytes=held_bytes(100, 100))
    assert result.rows_accepted == 100


def test_the_estimate_counts_users_as_well_as_events():
    # A user costs far more than an event (their state row): a file of one event per user fills memory sooner.
    assert held_bytes(1000, 1000) == 1000 * (BYTES_PER_EVENT + BYTES_PER_USER)
    assert held_bytes(1000, 10) < held_bytes(1000, 1000)
