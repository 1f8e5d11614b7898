"""Entry points: read a behaviour file (CSV or JSON Lines, optionally gzip) into an EventBatch with its rejects."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest.csv_rows import CsvReader, header_layout
from chalicelib.ingest.jsonl_rows import JsonReader
from chalicelib.ingest.rejects import RejectWriter
from chalicelib.ingest.stream import DEFAULT_MAX_DECOMPRESSED_BYTES, FORMATS, Blocks, sniff_format
from chalicelib.ingest.validate import Builder
from chalicelib.scoring.events import EventBatch

__all__ = ["ReadResult", "read_event_file", "read_events"]

_BYTES_PER_ROW = 64  # turns a row count into a read size; rows are ~40-60 bytes in practice
# Rows validated at a time at most, whatever chunk_rows allows: a piece's strings and arrays then stay in
# the CPU caches, which measured ~1.5x faster than 65536-row pieces.
_CACHE_ROWS = 4096


@dataclass
class ReadResult:
    """What a behaviour file yielded: accepted events plus the accounting of every row."""

    source: str
    events: EventBatch
    rows_read: int  # always rows_accepted + rows_rejected; blank lines are not rows
    rows_accepted: int
    rows_rejected: int
    rejects: RejectWriter

    def row_counts(self) -> dict[str, Any]:
        """Return the rows read, scored and rejected (and why), as a run summary reports them."""
        return {
            "read": self.rows_read,
            "scored": self.rows_accepted,
            "rejected": self.rows_rejected,
            "rejected_by_reason": dict(self.rejects.by_reason),
        }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration."""
    # Parsing allocates millions of acyclic lists and dicts; the collector's repeated scans of them cost
    # 10-20% of JSON Lines and quoted-CSV reading. Refcounting still frees everything.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read(stream: BinaryIO, source: str, fmt: str | None, rows: int, builder: Builder, max_inflated: int) -> EventBatch:
    """Detect compression and format, then feed every row to the builder; return the accepted events."""
    blocks = Blocks(stream, source, block_bytes=max(256, rows * _BYTES_PER_ROW), max_inflated=max_inflated)
    first = blocks.first_nonblank()
    if first is not None:
        if (fmt or sniff_format(source, first)) == "jsonl":
            JsonReader(blocks, builder).run()
        else:
            line = blocks.line + 1
            blocks.take_line()
            header = first.decode("utf-8", "replace").rstrip("\r")
            CsvReader(blocks, builder, header_layout(header, source, line), rows).run()
    return builder.batch()


def read_events(
    stream: BinaryIO,
    source: str,
    *,
    fmt: str | None = None,
    chunk_rows: int = 65536,
    rejects: RejectWriter | None = None,
    not_after: float | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
    max_memory_bytes: int | None = None,
) -> ReadResult:
    """Read a behaviour file (CSV or JSON Lines, maybe gzip) into events; raise UnreadableFileError if unusable."""
    # chunk_rows caps the rows decoded and validated at a time; events later than not_after (epoch seconds)
    # are rejected as future_event_time; gzip input inflating past max_decompressed_bytes is unreadable; a
    # file whose events and users so far would take more than max_memory_bytes (None: no limit) raises
    # FileTooLargeError while it is read. The caller closes result.rejects.
    if fmt not in (None, *FORMATS):
        raise ValueError(f"fmt must be one of {FORMATS} or None, not {fmt!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if max_decompressed_bytes < 1:
        raise ValueError("max_decompressed_bytes must be at least 1")
    own_rejects = rejects is None
    rejects = RejectWriter() if rejects is None else rejects
    builder = Builder(rejects, not_after, source=source, max_memory_bytes=max_memory_bytes)
    try:
        with _gc_paused():
            events = _read(stream, source, fmt, min(chunk_rows, _CACHE_ROWS), builder, max_decompressed_bytes)
    except BaseException:
        if own_rejects:
            rejects.close()
        raise
    return ReadResult(
        source=source,
        events=events,
        rows_read=builder.accepted + builder.rejected,
        rows_accepted=builder.accepted,
        rows_rejected=builder.rejected,
        rejects=rejects,
    )


def read_event_file(
    path: str | os.PathLike[str],
    *,
    chunk_rows: int = 65536,
    not_after: float | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES,
) -> ReadResult:
    """Read a local behaviour file; see read_events."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as stream:
            return read_events(
                stream,
                source,
                chunk_rows=chunk_rows,
                not_after=not_after,
                max_decompressed_bytes=max_decompressed_bytes,
            )
    except OSError as exc:  # missing, a directory, no permission, or a disk that fails mid-file
        raise UnreadableFileError(source, f"cannot read: {exc.strerror or exc}") from exc
