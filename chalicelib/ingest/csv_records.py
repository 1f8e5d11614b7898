"""CSV records out of physical lines, each tied to the lines it spans; a quote that never closes costs one line.

The csv module alone keeps an open quoted field open until the end of the file, so one stray quote swallows
every row after it into one bad record. Here a record may span at most MAX_RECORD_LINES lines: a quote still
open after that (or at the end of the file) rejects the line it opened on, and reading resynchronises at the
next line, so every physical line is still scored or rejected with its own number.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

# Physical lines one quoted record may span: generous for a multi-line text field, small enough that a stray
# quote is found out within a few lines.
MAX_RECORD_LINES = 100


@dataclass(frozen=True)
class Record:
    """One record's text, the line it starts on and how many lines it spans; `unclosed` when it is refused."""

    text: str
    start: int
    span: int
    bad_encoding: bool = False
    unclosed: bool = False
    row: list[str] | None = None  # the fields, when finding the record already parsed it


Line = tuple[int, str, bool]  # (line number, text with its LF, not valid UTF-8)


def single_line_rows(lines: list[str], delimiter: str) -> list[list[str]] | None:
    """Return the csv rows of `lines` when each line is exactly one record (the common case), else None."""
    try:
        rows = list(csv.reader(lines, delimiter=delimiter))
    except csv.Error:
        return None
    return rows if len(rows) == len(lines) else None


def split_records(
    lines: list[Line], delimiter: str, final: bool, plausible: Callable[[list[str]], bool]
) -> tuple[list[Record], list[Line]]:
    """Return the records of `lines`, and the lines of a record still open at their end (unless `final`).

    A record over several lines stands only when `plausible` accepts its fields (a line break belongs in a
    free-text field, never in an id or a time); otherwise its quote is taken as stray, like one never closed.
    """
    out: list[Record] = []
    i, n = 0, len(lines)
    while i < n:
        number, text, bad = lines[i]
        if not ends_in_quotes(text, delimiter, False):
            out.append(Record(text, number, 1, bad))
            i += 1
            continue
        end = _closing_line(lines, i, delimiter)
        joined = "" if end is None else "".join(t for _, t, _ in lines[i : end + 1])
        row = None if end is None else _parsed(joined, delimiter)
        if end is not None and row is not None and plausible(row):
            out.append(Record(joined, number, end + 1 - i, any(b for _, _, b in lines[i : end + 1]), row=row))
            i = end + 1
        elif n - i < MAX_RECORD_LINES and not final:
            return out, lines[i:]  # the record may close in the next block
        else:
            # Never closed: the opening line alone is refused, and the lines after it are read again as rows.
            out.append(Record(text, number, 1, bad, unclosed=True))
            i += 1
    return out, []


def _parsed(text: str, delimiter: str) -> list[str] | None:
    """Return the fields of one record's text, or None when the csv module refuses it."""
    try:
        return next(csv.reader([text], delimiter=delimiter))
    except csv.Error:
        return None


def _closing_line(lines: list[Line], start: int, delimiter: str) -> int | None:
    """Return the index of the line that closes the quoted field opened on `lines[start]`, within the limit."""
    for j in range(start + 1, min(len(lines), start + MAX_RECORD_LINES)):
        if not ends_in_quotes(lines[j][1], delimiter, True):
            return j
    return None


@cache
def _closed_line(delimiter: str) -> re.Pattern[str]:
    """Return a pattern matching a whole line whose quoted fields all close on it (csv's default dialect)."""
    d = re.escape(delimiter)
    # After a closing quote, csv takes what follows up to the delimiter as plain text, unless it is a quote
    # (which would have been an escaped one, leaving the field open).
    field = rf'(?:"(?:[^"]|"")*"(?:[^"{d}\n][^{d}\n]*)?|[^"{d}\n][^{d}\n]*|)'
    return re.compile(rf"{field}(?:{d}{field})*\r?\n?")


def ends_in_quotes(line: str, delimiter: str, in_quotes: bool) -> bool:
    """Return whether a quoted field is still open at the end of `line`, starting inside one if `in_quotes`.

    Follows the csv module's default dialect: a quote opens a field only at its start, and inside a quoted
    field two quotes stand for one.
    """
    if '"' not in line:
        return in_quotes
    if not in_quotes and _closed_line(delimiter).fullmatch(line):
        return False  # the common case, decided in C: every quoted field on the line closes on it
    at_start = not in_quotes
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if in_quotes:
            if c == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 1
                else:
                    in_quotes = False
        elif c == '"' and at_start:
            in_quotes = True
        at_start = not in_quotes and c == delimiter
        i += 1
    return in_quotes
