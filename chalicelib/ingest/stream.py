"""Input bytes: gzip and its inflation limit, text checks, whole-line blocks, and format sniffing."""

from __future__ import annotations

import gzip
import re
import zlib
from typing import BinaryIO

import numpy as np

from chalicelib.errors import UnreadableFileError

__all__ = ["DEFAULT_MAX_DECOMPRESSED_BYTES", "FORMATS", "Blocks", "decode", "sniff_format"]

FORMATS = ("csv", "jsonl")
# A gzip upload may not inflate past this: a few KiB of "bomb" must not fill memory or /tmp.
DEFAULT_MAX_DECOMPRESSED_BYTES = 4 << 30
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_FORMATS = (
    (b"PK\x03\x04", "a zip archive (or an Excel workbook)"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (b"PAR1", "a Parquet file"),
    (b"\xd0\xcf\x11\xe0", "an old-style Office document"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
)
_SNIFF_BYTES = 64 * 1024
# A "line" this long means the file has no usable line breaks; stop before it exhausts memory.
_MAX_LINE_BYTES = 64 * 1024 * 1024
# Bytes that were not UTF-8, as decoded by errors="surrogateescape": a valid file cannot produce these.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")


class _Prefixed:
    """A read-only stream that replays the bytes already taken off the front of another stream."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        """Return up to `size` bytes (all that remain when negative), the replayed head first."""
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._stream.read(), b""
            else:
                data, self._head = self._head[:size], self._head[size:]
            return data
        return self._stream.read(size)


def _read_at_least(stream: BinaryIO, size: int) -> bytes:
    """Read until `size` bytes or end of stream; network bodies may return short reads."""
    parts = []
    got = 0
    while got < size:
        part = stream.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class Blocks:
    """Hands out the (decompressed) input as runs of whole lines, counting physical lines."""

    def __init__(self, stream: BinaryIO, source: str, block_bytes: int, max_inflated: int) -> None:
        self.source = source
        self._max_inflated = max_inflated
        self._inflated = 0
        self.line = 0  # physical lines handed out so far
        self._block = block_bytes
        self._eof = False
        head = _read_at_least(stream, 8)
        self._gzip = head.startswith(_GZIP_MAGIC)
        self._raw = gzip.GzipFile(fileobj=_Prefixed(head, stream), mode="rb") if self._gzip else None
        self._plain = None if self._gzip else _Prefixed(head, stream)
        self._buf = b""
        self._fill_until(_SNIFF_BYTES)
        self._check_text()

    def _read(self, size: int) -> bytes:
        """Return up to `size` more bytes of (decompressed) input; raise on bad gzip or past the inflation limit."""
        if not self._gzip:
            return self._plain.read(size)  # type: ignore[union-attr]
        try:
            # One byte past the limit is enough to know it is exceeded; asking for less bounds memory.
            data = self._raw.read(min(size, self._max_inflated - self._inflated + 1))  # type: ignore[union-attr]
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            reason = "gzip data ends early (truncated file)" if isinstance(exc, EOFError) else "corrupt gzip data"
            where = f" after line {self.line}" if self.line else ""
            raise UnreadableFileError(self.source, f"{reason}{where}: {exc}") from exc
        self._inflated += len(data)
        if self._inflated > self._max_inflated:
            raise UnreadableFileError(
                self.source,
                f"gzip data decompresses to more than {self._max_inflated} bytes (MAX_DECOMPRESSED_BYTES, by default "
                "derived from the function's memory; a gzip bomb, or a file to split)",
            )
        return data

    def _fill_until(self, size: int) -> None:
        """Read until the buffer holds `size` bytes or the input ends."""
        parts = [self._buf]
        have = len(self._buf)
        while have < size and not self._eof:
            part = self._read(max(size - have, self._block))
            if not part:
                self._eof = True
                break
            parts.append(part)
            have += len(part)
        self._buf = b"".join(parts)

    def _check_text(self) -> None:
        """Refuse input that is plainly not CSV or JSON Lines text, and drop a UTF-8 byte-order mark."""
        head = self._buf
        for magic, kind in _OTHER_FORMATS:
            if head.startswith(magic):
                raise UnreadableFileError(
                    self.source, f"content is {kind}; expected CSV or JSON Lines text, optionally gzip-compressed"
                )
        if head.startswith(_UTF8_BOM):
            self._buf = head = head[len(_UTF8_BOM) :]
        sample = head[:_SNIFF_BYTES]
        if b"\x00" in sample:
            raise UnreadableFileError(self.source, "content is binary (NUL bytes), not CSV or JSON Lines text")
        codes = np.frombuffer(sample, dtype=np.uint8)
        odd = int(np.count_nonzero((codes < 32) & ~np.isin(codes, (9, 10, 12, 13))))
        odd += sample.decode("utf-8", "replace").count("\ufffd")
        if sample and odd > len(sample) * 0.3:
            raise UnreadableFileError(self.source, "content is binary or not UTF-8 text")

    def first_nonblank(self) -> bytes | None:
        """Skip blank lines; return the first other line (left unconsumed), or None at end of input."""
        while True:
            end = self._buf.find(b"\n")
            while end < 0 and not self._eof:
                self._fill_until(2 * len(self._buf) + self._block)  # doubling keeps long lines linear
                end = self._buf.find(b"\n")
                if len(self._buf) > _MAX_LINE_BYTES and end < 0:
                    self._too_long()
            line = self._buf if end < 0 else self._buf[:end]
            if line.strip():
                return line
            if end < 0:
                self._buf = b""
                return None
            self._buf = self._buf[end + 1 :]
            self.line += 1

    def take_line(self) -> None:
        """Consume the line that first_nonblank returned."""
        end = self._buf.find(b"\n")
        self._buf = b"" if end < 0 else self._buf[end + 1 :]
        self.line += 1

    def next_block(self) -> tuple[bytes, int] | None:
        """Return the next run of whole lines (ending in a newline) and the number of its first line."""
        if len(self._buf) < self._block:
            self._fill_until(self._block)
        data = self._buf
        cut = data.rfind(b"\n") + 1
        while cut == 0 and not self._eof:
            if len(data) > _MAX_LINE_BYTES:
                self._too_long()
            self._fill_until(2 * len(data) + self._block)  # doubling keeps long lines linear
            data = self._buf
            cut = data.rfind(b"\n") + 1
        if not data:
            return None
        if self._eof and cut < len(data):
            block, self._buf = data + b"\n", b""  # last line without a newline
        else:
            block, self._buf = data[:cut], data[cut:]
        first = self.line + 1
        self.line += block.count(b"\n")
        return block, first

    def _too_long(self) -> None:
        """Raise for a line too long to be a row."""
        raise UnreadableFileError(
            self.source,
            f"line {self.line + 1} is longer than {_MAX_LINE_BYTES >> 20} MiB; "
            "the file has no usable line breaks (lines must end in LF or CRLF)",
        )


def decode(data: bytes) -> tuple[str, list[int]]:
    """Return (text, indexes of lines holding bytes that are not UTF-8) of a block of lines."""
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
        bad = [i for i, line in enumerate(text.split("\n")) if _ESCAPED_BYTES.search(line)]
        return text, bad


def _format_from_name(source: str) -> str | None:
    """Return the format a file name implies, or None when it implies none."""
    name = source.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    return None


def sniff_format(source: str, first_line: bytes) -> str:
    """Return the format of a file: the one its name implies, else JSON Lines if its first line opens JSON."""
    return _format_from_name(source) or ("jsonl" if first_line.lstrip()[:1] in (b"{", b"[") else "csv")
