"""Newline-aligned ranges of a behaviour file, found in one streaming pass, that no CSV record crosses.

A cut goes right after a newline at or past each range's size. In JSON Lines any newline will do. In CSV a quoted
field may hold line breaks, and the reader (ingest/csv_records.py) lets one record span up to MAX_RECORD_LINES
lines, so a cut goes only where no record can be open: after a line that ends outside quotes whether it started
inside or outside one, or after lines without a quote that follow such a line, the range's start, or
MAX_RECORD_LINES lines without a quote (a record still open there would have been refused as unclosed).
A newline byte never occurs inside a multi-byte UTF-8 character, so no cut splits one.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest.csv_records import MAX_RECORD_LINES, ends_in_quotes
from chalicelib.ingest.csv_rows import header_layout
from chalicelib.ingest.stream import Blocks, sniff_format

# Bytes read at a time.
BLOCK_BYTES = 8 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER_BYTES = 1 << 20


@dataclass
class Piece:
    """One range: where it starts in the (decompressed) file, its bytes' length, and the number of its first line."""

    start: int
    length: int
    first_line: int


@dataclass
class Cuts:
    """What the pass found: the format, the header prefix every CSV range is read after, and the ranges."""

    fmt: str
    prefix: bytes
    prefix_lines: int
    gzip: bool
    pieces: list[Piece] = field(default_factory=list)
    total_bytes: int = 0


class _Source:
    """The object's bytes, inflated when gzip, with the inflation bounded."""

    def __init__(self, body: BinaryIO, source: str, max_inflated: int) -> None:
        self.source = source
        self.max_inflated = max_inflated
        head = body.read(2)
        self.gzip = head == _GZIP_MAGIC
        rest = _Joined(head, body)
        self._stream: BinaryIO = gzip.GzipFile(fileobj=rest, mode="rb") if self.gzip else rest  # type: ignore[assignment]
        self.read_bytes = 0
        self.eof = False

    def read(self) -> bytes:
        """Return the next block (b"" at the end); raise UnreadableFileError on bad gzip or past the inflation."""
        try:
            data = self._stream.read(BLOCK_BYTES)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise UnreadableFileError(self.source, f"corrupt or truncated gzip data: {exc}") from exc
        self.read_bytes += len(data)
        if self.gzip and self.read_bytes > self.max_inflated:
            raise UnreadableFileError(
                self.source, f"gzip data decompresses to more than {self.max_inflated} bytes, past what one split reads"
            )
        self.eof = not data
        return data


class _Joined(io.RawIOBase):
    """A stream of `head` then the rest of `body`."""

    def __init__(self, head: bytes, body: BinaryIO) -> None:
        self.head = head
        self.body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        head, self.head = self.head, b""
        if size < 0:
            return head + self.body.read()
        return head + self.body.read(size - len(head)) if size > len(head) else head

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def cut_file(
    body: BinaryIO,
    source: str,
    range_bytes: int,
    max_inflated: int,
    emit: Callable[[int, bytes, bytes], None] | None = None,
) -> Cuts:
    """Cut a file into ranges in one pass; `emit(index, prefix, bytes)` gets each range of a gzip file.

    A plain file's ranges are read back from the object by byte range; a gzip file's cannot be, so they are
    kept decompressed (`emit`), which costs one copy of the file in the bucket until the run finishes.

    Raises UnreadableFileError for a file the reader would refuse as a whole (binary, bad gzip, a CSV header
    without the required columns).
    """
    src = _Source(body, source, max_inflated)
    buf = src.read()
    while not src.eof and b"\n" not in buf.lstrip()[:_MAX_HEADER_BYTES] and len(buf) < _MAX_HEADER_BYTES:
        buf += src.read()  # until the first line that is not blank is whole
    cuts = _head(buf, source, src.gzip)
    buf = buf[len(cuts.prefix) :]
    offset, line = len(cuts.prefix), cuts.prefix_lines
    delimiter = cuts_delimiter(cuts, source)
    while buf or not src.eof:
        while len(buf) < range_bytes and not src.eof:
            buf += src.read()
        cut = len(buf) if len(buf) < range_bytes else find_cut(buf, range_bytes, delimiter)
        while cut is None:
            searched = len(buf)
            more = src.read()
            if not more:
                cut = len(buf)
                break
            buf += more
            cut = find_cut(buf, max(range_bytes, searched), delimiter)
        if not cut:
            break
        piece, buf = buf[:cut], buf[cut:]
        if emit is not None and src.gzip:
            emit(len(cuts.pieces), cuts.prefix, piece)
        cuts.pieces.append(Piece(offset, cut, line + 1))
        offset += cut
        line += piece.count(b"\n")
    cuts.total_bytes = offset
    return cuts


def _head(buf: bytes, source: str, gzipped: bool) -> Cuts:
    """Check the file's first bytes as the reader does; return its format and the prefix every range gets."""
    Blocks(io.BytesIO(buf[: 64 * 1024]), source, block_bytes=1 << 16, max_inflated=1 << 30)  # refuses binary
    lines = buf.split(b"\n")
    skipped = 0
    while skipped < len(lines) - 1 and not lines[skipped].strip():
        skipped += 1
    first = lines[skipped].removeprefix(b"\xef\xbb\xbf") if skipped < len(lines) else b""
    fmt = sniff_format(source, first) if first.strip() else "csv"
    if fmt == "jsonl" or not first.strip():
        return Cuts(fmt, b"", 0, gzipped)
    header_layout(first.decode("utf-8", "replace").rstrip("\r"), source, skipped + 1)
    end = sum(len(x) + 1 for x in lines[: skipped + 1])
    return Cuts(fmt, buf[:end], skipped + 1, gzipped)


def cuts_delimiter(cuts: Cuts, source: str) -> str | None:
    """Return the CSV delimiter of the file (None for JSON Lines: any newline is a record boundary)."""
    if cuts.fmt != "csv" or not cuts.prefix:
        return None
    header = cuts.prefix.rstrip(b"\n").rsplit(b"\n", 1)[-1].removeprefix(b"\xef\xbb\xbf")
    return header_layout(header.decode("utf-8", "replace").rstrip("\r"), source, cuts.prefix_lines).delimiter


def find_cut(buf: bytes, at_least: int, delimiter: str | None) -> int | None:
    """Return the first position past a newline at or after `at_least` where no record is open; None if none yet."""
    nl = buf.find(b"\n", at_least - 1)
    while nl >= 0:
        if delimiter is None or _closed_before(buf, nl, delimiter):
            return nl + 1
        nl = buf.find(b"\n", nl + 1)
    return None


def _closed_before(buf: bytes, nl: int, delimiter: str) -> bool:
    """Return True when no CSV record can be open after the line that ends at `nl`."""
    end = nl
    for _ in range(MAX_RECORD_LINES):
        start = buf.rfind(b"\n", 0, end) + 1
        line = buf[start : end + 1]
        if b'"' in line:
            text = line.decode("utf-8", "surrogateescape")
            return not ends_in_quotes(text, delimiter, False) and not ends_in_quotes(text, delimiter, True)
        if start == 0:
            return True  # the range's start is a cut already
        end = start - 1
    return True
