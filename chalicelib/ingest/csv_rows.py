"""CSV rows: the layout a header gives, and blocks of lines split into columns (numpy while unquoted, csv after)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from itertools import chain

import numpy as np

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest.csv_records import MAX_RECORD_LINES, Line, Record, single_line_rows, split_records
from chalicelib.ingest.rejects import FIELDS, short
from chalicelib.ingest.stream import Blocks, decode
from chalicelib.ingest.validate import Builder
from chalicelib.scoring.events import REQUIRED_COLUMNS

__all__ = ["CsvReader", "Layout", "header_layout"]

_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class Layout:
    """Where the fields live in the rows of one CSV file."""

    delimiter: str
    ncols: int
    user: int
    time: int
    type: int
    value: int | None
    locale: int | None = None

    @property
    def min_fields(self) -> int:
        """Return how many leading fields a short row needs to still hold every required column."""
        return max(self.user, self.time, self.type) + 1

    def fields(self, row: list[str]) -> dict[str, str]:
        """Return the known fields of a raw row, as far as it has them (for the reject file)."""
        positions = (self.user, self.time, self.type, self.value)
        known = zip(FIELDS, positions, strict=True)
        return {name: row[pos] for name, pos in known if pos is not None and pos < len(row)}


def header_layout(header: str, source: str, line: int) -> Layout:
    """Return the layout of a CSV header, choosing the delimiter that yields the required columns."""
    best: list[str] = []
    for delimiter in _DELIMITERS:
        names = _header_names(header, delimiter)
        if all(column in names for column in REQUIRED_COLUMNS):
            return _layout_of(names, delimiter, source, line)
        if _required_count(names) > _required_count(best) or not best:
            best = names
    raise _missing_columns(header, best, source, line)


def _header_names(header: str, delimiter: str) -> list[str]:
    """Return the column names of a header split on one delimiter, matched ignoring case and spaces."""
    return [name.strip().lower() for name in next(csv.reader([header], delimiter=delimiter), [])]


def _required_count(names: list[str]) -> int:
    """Return how many of the required columns the names hold."""
    return sum(column in names for column in REQUIRED_COLUMNS)


def _layout_of(names: list[str], delimiter: str, source: str, line: int) -> Layout:
    """Return the layout of header names that hold every required column; raise if one is repeated."""
    for column in (*REQUIRED_COLUMNS, "value"):
        if names.count(column) > 1:
            raise UnreadableFileError(source, f"column {column!r} appears more than once in the header", line)
    return Layout(
        delimiter=delimiter,
        ncols=len(names),
        user=names.index("user_id"),
        time=names.index("event_time"),
        type=names.index("event_type"),
        value=names.index("value") if "value" in names else None,
        # An optional extra: read when there is exactly one; a repeated one is ignored, as other columns are.
        locale=names.index("locale") if names.count("locale") == 1 else None,
    )


def _missing_columns(header: str, best: list[str], source: str, line: int) -> UnreadableFileError:
    """Return the error for a header lacking required columns, `best` being its most complete split."""
    missing = ", ".join(column for column in REQUIRED_COLUMNS if column not in best)
    reason = f"header lacks required column(s): {missing}"
    # What the header holds goes in the detail, kept out of logs: in a file without a header row, the
    # "header" is a row of behaviour (a user id, a time, a value).
    if header.lstrip().startswith(("{", "[")):
        reason += " (the content looks like JSON; JSON Lines files should be named .jsonl)"
        detail = None
    elif len(best) == 1:
        detail = (
            f"the header {short(header)} splits into a single column: "
            "the delimiter must be one of comma, semicolon, tab or |"
        )
    else:
        detail = f"found: {', '.join(best[:12])}"
    return UnreadableFileError(source, reason, line, detail)


class CsvReader:
    """Turns blocks of CSV lines into validated chunks: a vectorised path while no quotes appear, csv after."""

    def __init__(self, blocks: Blocks, builder: Builder, layout: Layout, chunk_rows: int) -> None:
        self.blocks = blocks
        self.builder = builder
        self.layout = layout
        self.chunk_rows = chunk_rows
        self._delimiter_byte = ord(layout.delimiter)

    def run(self) -> None:
        """Read every remaining block."""
        while (block := self.blocks.next_block()) is not None:
            data, first = block
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            if b'"' in data or b"\r" in data:
                # Quoted fields may hold delimiters and line breaks: hand this block and the rest of the
                # file to the csv module, which keeps its state across blocks.
                self._quoted(data, first)
                return
            self._plain(data, first)
            self.builder.flush()

    def _plain(self, data: bytes, first: int) -> None:
        """Split a block without quotes: one row per line, found with numpy on the raw bytes."""
        layout = self.layout
        delimiter = layout.delimiter
        buf = np.frombuffer(data, dtype=np.uint8)
        ends = np.flatnonzero(buf == 10)
        separators = np.flatnonzero(buf == self._delimiter_byte)
        per_line = np.diff(np.searchsorted(separators, ends), prepend=0)
        good = per_line == layout.ncols - 1
        text, bad = decode(data)
        if bad:
            good[bad] = False
        if good.all():
            flat = text.replace("\n", delimiter).split(delimiter)
            flat.pop()
            self._emit(flat, first + np.arange(ends.shape[0]))
            return
        lines = text.split("\n")
        bad_set = set(bad)
        for i in np.flatnonzero(~good).tolist():
            row = lines[i].split(delimiter)
            padded = self._classify(row, first + i, i in bad_set)
            if padded is not None:
                lines[i] = delimiter.join(padded)
                good[i] = True
        rows = np.flatnonzero(good)
        flat = delimiter.join([lines[i] for i in rows.tolist()]).split(delimiter) if rows.shape[0] else []
        self._emit(flat, first + rows)

    def _classify(self, row: list[str], line: int, bad_encoding: bool) -> list[str] | None:
        """Return an irregular row made full-width if it is usable; otherwise reject or skip it (blank)."""
        layout = self.layout
        if bad_encoding:
            self.builder.reject(line, "bad_encoding", "row is not valid UTF-8", layout.fields(row))
            return None
        if len(row) <= 1 and not "".join(row).strip():
            return None  # blank line: not a row
        if len(row) == layout.ncols:
            return row
        # Trailing empty fields are often dropped by exporters; a short row that still reaches every
        # required column is kept, its missing fields empty. Any extra field means the row is shifted.
        if layout.min_fields <= len(row) < layout.ncols:
            return row + [""] * (layout.ncols - len(row))
        detail = f"row has {len(row)} fields; the header has {layout.ncols}"
        self.builder.reject(line, "malformed_row", detail, layout.fields(row))
        return None

    def _emit(self, flat: list[str], lines: np.ndarray) -> None:
        """Hand full-width rows, flattened field by field, to the builder as columns."""
        if not flat:
            return
        layout = self.layout
        width = layout.ncols
        values = None if layout.value is None else [v or None for v in flat[layout.value :: width]]
        locales = None if layout.locale is None else flat[layout.locale :: width]
        self.builder.add(
            flat[layout.user :: width], flat[layout.time :: width], flat[layout.type :: width], values, lines, locales
        )

    def _quoted(self, data: bytes, first: int) -> None:
        """Read this block and every later one with the csv module, each record tied to the lines it spans."""
        delimiter = self.layout.delimiter
        carry: list[Line] = []
        block: tuple[bytes, int] | None = (data, first)
        while block is not None:
            data, first = block
            text, bad = decode(data)
            lines = io.StringIO(text, newline="\n").readlines()
            block = self.blocks.next_block()
            rows = None if carry else single_line_rows(lines, delimiter)
            if rows is not None:
                self._rows(rows, first + np.arange(len(rows)), set(bad))
            else:
                bad_set = set(bad)
                numbered = carry + [(first + i, line, i in bad_set) for i, line in enumerate(lines)]
                found, carry = split_records(numbered, delimiter, block is None, self._plausible)
                self._records(found)
            self.builder.flush()

    def _plausible(self, row: list[str]) -> bool:
        """Return whether a record spanning lines may stand: the header's width, and no line break in the user
        id or the time (neither can hold one, so such a record is a stray quote's, not a multi-line field's)."""
        layout = self.layout
        return len(row) == layout.ncols and "\n" not in row[layout.user] and "\n" not in row[layout.time]

    def _records(self, found: list[Record]) -> None:
        """Validate records one csv record each; refuse the unclosed and the unreadable ones alone."""
        rows: list[list[str]] = []
        starts: list[int] = []
        bad_rows: set[int] = set()
        for record in found:
            if record.unclosed:
                detail = f"a quoted field opened on this line is still open {MAX_RECORD_LINES} lines later"
                self.builder.reject(record.start, "malformed_row", detail, None)
                continue
            row = record.row
            if row is None:
                try:
                    row = next(csv.reader([record.text], delimiter=self.layout.delimiter))
                except csv.Error as exc:  # e.g. a lone CR in an unquoted field: that record alone is refused
                    self.builder.reject(record.start, "malformed_row", _unreadable(record.text, exc), None)
                    continue
            if record.bad_encoding:
                bad_rows.add(len(rows))
            rows.append(row)
            starts.append(record.start)
        if rows:
            self._rows(rows, np.array(starts, dtype=np.int64), bad_rows)

    def _rows(self, rows: list[list[str]], starts: np.ndarray, bad_rows: set[int]) -> None:
        """Validate csv records: regular ones in bulk, irregular or undecodable ones one by one."""
        width = self.layout.ncols
        if not bad_rows and all(len(row) == width for row in rows):
            self._emit(list(chain.from_iterable(rows)), starts)
            return
        keep: list[list[str]] = []
        keep_at: list[int] = []
        for i, row in enumerate(rows):
            full = self._classify(row, int(starts[i]), i in bad_rows)
            if full is not None:
                keep.append(full)
                keep_at.append(int(starts[i]))
        self._emit(list(chain.from_iterable(keep)), np.array(keep_at, dtype=np.int64))


def _unreadable(text: str, error: csv.Error) -> str:
    """Return why the csv module refused a record, in the file's terms."""
    if "\r" in text.removesuffix("\n").removesuffix("\r"):
        return "the row holds a carriage return (CR) that does not end a line"
    return f"unreadable CSV record: {error}"
