"""Streaming reader for behaviour files (CSV or JSON Lines, optionally gzip) into an EventBatch."""

from __future__ import annotations

import contextlib
import csv
import gc
import gzip
import io
import json
import math
import operator
import os
import re
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import chain, islice, repeat
from typing import BinaryIO

import numpy as np

from chalicelib.errors import UnreadableFileError
from chalicelib.scoring.events import (
    MAX_USER_ID_LENGTH,
    REQUIRED_COLUMNS,
    TYPE_CODE,
    EventBatch,
    locale_code,
    type_code,
)

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_BYTES",
    "MAX_ABS_VALUE",
    "REJECT_REASONS",
    "ReadResult",
    "RejectWriter",
    "parse_timestamp",
    "read_event_file",
    "read_events",
]

# Stable reason codes of rejected rows, most serious first: a row with several faults gets the first.
REJECT_REASONS: tuple[str, ...] = (
    "bad_encoding",
    "malformed_row",
    "bad_json",
    "missing_user_id",
    "user_id_too_long",
    "user_id_control_chars",
    "missing_event_time",
    "bad_event_time",
    "event_time_out_of_range",
    "future_event_time",
    "missing_event_type",
    "bad_value",
    "nonfinite_value",
    "value_out_of_range",
    "negative_value",
)
_CODE = {reason: code for code, reason in enumerate(REJECT_REASONS, start=1)}  # 0 means accepted
_FIELDS = ("user_id", "event_time", "event_type", "value")
_FIELD_SET = frozenset(_FIELDS)
_REFUND = TYPE_CODE["refund"]
_FORMATS = ("csv", "jsonl")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_DELIMITERS = (",", ";", "\t", "|")
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
_BYTES_PER_ROW = 64  # turns a row count into a read size; rows are ~40-60 bytes in practice
# Rows validated at a time at most, whatever chunk_rows allows: a piece's strings and arrays then stay in
# the CPU caches, which measured ~1.5x faster than 65536-row pieces.
_CACHE_ROWS = 4096
# No real amount or duration is this large; such values are unit or parsing errors that would swamp features.
MAX_ABS_VALUE = 1e9
# A gzip upload may not inflate past this: a few KiB of "bomb" must not fill memory or /tmp.
DEFAULT_MAX_DECOMPRESSED_BYTES = 4 << 30
_REJECT_FIELD_CHARS = 256
_CACHE_LIMIT = 100_000

_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")
_SURROGATES = re.compile("[\ud800-\udfff]")
# Bytes that were not UTF-8, as decoded by errors="surrogateescape": a valid file cannot produce these.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]")
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_US = 1_000_000


# --------------------------------------------------------------------------------------------- timestamps


def _timestamp_us(text: str) -> int:
    """Return microseconds since the epoch (UTC) of an ISO 8601 date or date-time; raise ValueError."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO 8601 date or date-time: {text!r}")
    year, month, day, hour, minute, second, fraction, sign, off_hour, off_minute = match.groups()
    days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    hour_, minute_, second_ = int(hour or 0), int(minute or 0), int(second or 0)
    if hour_ > 23 or minute_ > 59 or second_ > 59:
        raise ValueError(f"time of day out of range: {text!r}")
    offset = 0
    if sign:
        off_h, off_m = int(off_hour), int(off_minute or 0)
        if off_h > 23 or off_m > 59:
            raise ValueError(f"UTC offset out of range: {text!r}")
        offset = (off_h * 3600 + off_m * 60) * (1 if sign == "+" else -1)
    # Microsecond precision, truncated, like datetime.fromisoformat.
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    seconds = days * 86400 + hour_ * 3600 + minute_ * 60 + second_ - offset
    return seconds * _US + micros


def parse_timestamp(text: str) -> float:
    """Return epoch seconds (UTC) of an ISO 8601 date or date-time (no offset means UTC); raise ValueError."""
    return _timestamp_us(text) / _US


_TS_MAX = 40  # longest layout the vectorised parser takes is 36: date, time, 10 fraction digits, +HH:MM
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_FRACTION_SCALE = np.array([100_000, 10_000, 1_000, 100, 10, 1], dtype=np.int64)


class _ByteColumns:
    """Column access into fixed-width ASCII texts; columns past the widest text read as NUL."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes
        self._nul = np.zeros(codes.shape[0], dtype=np.uint8)

    def __getitem__(self, pos: int) -> np.ndarray:
        return self.codes[:, pos] if pos < self.codes.shape[1] else self._nul

    def digits(self, *positions: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (number, all-digits mask) of the digits at the given columns."""
        value = np.zeros(self.codes.shape[0], dtype=np.int64)
        ok = np.ones(self.codes.shape[0], dtype=bool)
        for pos in positions:
            digit = self[pos].astype(np.int64) - 48
            ok &= (digit >= 0) & (digit <= 9)
            value = value * 10 + digit
        return value, ok


def _parse_times_vectorised(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (epoch microseconds, parsed mask) for the common ISO layouts; unmasked rows need _timestamp_us.

    Takes YYYY-MM-DD, or that plus [T ]HH:MM:SS[.f+][Z|+HH:MM|+HHMM|+HH]; every other form (and any junk)
    is left to the exact per-row parser, so this only has to agree with it on what it accepts.
    """
    n = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    # As narrow as the longest text: copying into wide rows costs more than the parsing.
    width = min(int(lengths.max(initial=0)), _TS_MAX - 1) + 1
    try:
        raw = np.array(texts, dtype=f"S{width}")
    except UnicodeEncodeError:
        raw = np.array([t if t.isascii() else "" for t in texts], dtype=f"S{width}")
    c = _ByteColumns(raw.view(np.uint8).reshape(n, width))

    year, ok = c.digits(0, 1, 2, 3)
    month, ok_month = c.digits(5, 6)
    day, ok_day = c.digits(8, 9)
    ok &= ok_month & ok_day & (c[4] == 45) & (c[7] == 45) & (lengths < _TS_MAX)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_index = np.clip(month, 0, 12)
    ok &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
    ok &= day <= _DAYS_IN_MONTH[month_index] + ((month_index == 2) & leap)

    # Days from civil (H. Hinnant); years are >= 1 here, so the floor divisions need no sign care.
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468

    separator = c[10]
    date_only = (separator == 0) & (lengths == 10)
    hour, ok_hour = c.digits(11, 12)
    minute, ok_minute = c.digits(14, 15)
    second, ok_second = c.digits(17, 18)
    timed = ((separator == 84) | (separator == 32)) & ok_hour & ok_minute & ok_second
    timed &= (c[13] == 58) & (c[16] == 58) & (hour <= 23) & (minute <= 59) & (second <= 59)

    dot = c[19] == 46
    if dot.any():
        codes = np.zeros((n, _TS_MAX), dtype=np.uint8)  # fraction and zone columns vary per row
        codes[:, :width] = c.codes
        frac_digits = (codes[:, 20:30] >= 48) & (codes[:, 20:30] <= 57)
        run = np.cumprod(frac_digits, axis=1, dtype=np.int64)
        frac_len = run.sum(axis=1)
        micros = ((codes[:, 20:26].astype(np.int64) - 48) * run[:, :6] * _FRACTION_SCALE).sum(axis=1)
        micros = np.where(dot, micros, 0)
        timed &= ~dot | (frac_len >= 1)
        tz_at = np.where(dot, 20 + frac_len, 19)
        tz = _ByteColumns(np.take_along_axis(codes, tz_at[:, None] + np.arange(6), axis=1))
    else:  # whole seconds everywhere: the zone starts at a fixed column
        micros = np.zeros(n, dtype=np.int64)
        tz_at = np.full(n, 19, dtype=np.int64)
        tz = _ByteColumns(c.codes[:, 19:25])
    tz_char = tz[0]
    off_hour, ok_off_hour = tz.digits(1, 2)
    off_min_colon, ok_colon = tz.digits(4, 5)
    off_min_basic, ok_basic = tz.digits(3, 4)
    extended = ok_colon & (tz[3] == 58) & (lengths == tz_at + 6)
    basic = ok_basic & (lengths == tz_at + 5)
    hours_only = lengths == tz_at + 3
    off_minute = np.where(extended, off_min_colon, np.where(basic, off_min_basic, 0))
    signed = ((tz_char == 43) | (tz_char == 45)) & ok_off_hour & (extended | basic | hours_only)
    signed &= (off_hour <= 23) & (off_minute <= 59)
    naive = lengths == tz_at
    zulu = (tz_char == 90) & (lengths == tz_at + 1)
    timed &= naive | zulu | signed

    offset = np.where(signed, (off_hour * 3600 + off_minute * 60) * np.where(tz_char == 45, -1, 1), 0)
    seconds = days * 86400 + np.where(timed, hour * 3600 + minute * 60 + second - offset, 0)
    micros = np.where(timed, micros, 0)
    return seconds * _US + micros, ok & (date_only | timed)


# --------------------------------------------------------------------------------------------- rejects


def _clip(value: object) -> str:
    """Return a field as reject-CSV text: bounded length, undecodable bytes shown as U+FFFD."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text[:_REJECT_FIELD_CHARS]
    return text if text.isascii() else _SURROGATES.sub("\ufffd", text)


class RejectWriter:
    """Collects rejected rows as CSV in a tempfile.SpooledTemporaryFile (bounded memory)."""

    COLUMNS = ("line", "reason", "detail", *_FIELDS)

    def __init__(self, *, max_rows: int = 100_000, spool_bytes: int = 1 << 20) -> None:
        # Every reject is counted; only the first max_rows are written, so a garbage file cannot fill /tmp.
        self.max_rows = max_rows
        self.count = 0
        self.written = 0
        self.by_reason: dict[str, int] = {}
        self._file = tempfile.SpooledTemporaryFile(max_size=spool_bytes, mode="w+b")  # noqa: SIM115 - closed by close()
        self._text = io.StringIO()
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._csv.writerow(self.COLUMNS)

    @property
    def truncated(self) -> bool:
        """Return whether some rejects were counted but not written."""
        return self.count > self.written

    def add(self, line: int, reason: str, detail: str, fields: Mapping[str, object] | None) -> None:
        """Record one rejected row."""
        self.count += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if self.written >= self.max_rows:
            return
        values = [_clip(fields.get(name)) for name in _FIELDS] if fields else [""] * len(_FIELDS)
        self._csv.writerow([line, reason, _clip(detail), *values])
        self.written += 1
        if self._text.tell() > 65536:
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._text.getvalue().encode("utf-8"))
        self._text.seek(0)
        self._text.truncate()

    def to_bytes(self) -> bytes:
        """Return the whole reject CSV, header included."""
        self._flush()
        self._file.seek(0)
        data = self._file.read()
        self._file.seek(0, io.SEEK_END)
        return data

    def close(self) -> None:
        """Release the spool file."""
        self._file.close()

    def __getstate__(self) -> dict[str, object]:
        # A result can cross a process boundary (the CLI reads in a worker process): carry the CSV as bytes.
        return {
            "max_rows": self.max_rows,
            "count": self.count,
            "written": self.written,
            "by_reason": dict(self.by_reason),
            "data": self.to_bytes(),
        }

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(max_rows=int(state["max_rows"]))  # type: ignore[misc, arg-type]
        self._text.seek(0)
        self._text.truncate()  # the header is in the carried data already
        self._file.write(state["data"])  # type: ignore[arg-type]
        self.count = int(state["count"])  # type: ignore[arg-type]
        self.written = int(state["written"])  # type: ignore[arg-type]
        self.by_reason = dict(state["by_reason"])  # type: ignore[call-overload]

    def __enter__(self) -> RejectWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- results


@dataclass
class ReadResult:
    """What a behaviour file yielded: accepted events plus the accounting of every row."""

    source: str
    events: EventBatch
    rows_read: int  # always rows_accepted + rows_rejected; blank lines are not rows
    rows_accepted: int
    rows_rejected: int
    rejects: RejectWriter


class _Builder:
    """Validates columns of raw fields chunk by chunk and accumulates the accepted events as arrays."""

    def __init__(self, rejects: RejectWriter, not_after: float | None) -> None:
        self.rejects = rejects
        self.not_after = not_after
        self.accepted = 0
        self.rejected = 0
        self.user_ids: list[str] = []
        # User index by stripped id and by raw field. One dict serves both: a raw field is either its own
        # stripped id or has surrounding spaces, which no stripped id has, so the keys never clash.
        self._index: dict[str, int] = {}
        self._type_of_raw: dict[str, int] = {}  # raw field -> type code, -1 when empty
        self._reorder = False
        self._pending: list[tuple[int, str, str, Mapping[str, object] | None]] = []
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._locales: dict[str, tuple[float, str]] = {}
        self._locale_of_raw: dict[str, str | None] = {}

    def reject(self, line: int, reason: str, detail: str, fields: Mapping[str, object] | None) -> None:
        """Count a rejected row; it is written at the next flush, so the reject file stays in line order."""
        self.rejected += 1
        self._pending.append((line, reason, detail, fields))

    def flush(self) -> None:
        """Write the rejects of the piece just validated, in line order."""
        if self._pending:
            self._pending.sort(key=operator.itemgetter(0))
            for line, reason, detail, fields in self._pending:
                self.rejects.add(line, reason, detail, fields)
            self._pending.clear()

    def add(
        self,
        users: list[str],
        times: list[str],
        types: list[str],
        values: list[object] | None,
        lines: np.ndarray,
        locales: list[str | None] | None = None,
    ) -> None:
        """Validate one chunk of rows (columns of raw fields, None for an absent value) and keep the good."""
        n = len(users)
        if n == 0:
            return
        value, value_code = self._values(values, n)
        codes = self._type_codes(types)
        micros, time_code = self._times(times)
        seconds = micros / _US
        # Before the epoch is never a real event here, only a default date (0001-01-01, 1900-01-01) or a typo.
        time_code[(time_code == 0) & (micros < 0)] = _CODE["event_time_out_of_range"]
        if self.not_after is not None:
            time_code[(time_code == 0) & (seconds > self.not_after)] = _CODE["future_event_time"]
        users_before = len(self.user_ids)
        index, user_code = self._users(users)

        # Assigned least serious first, so the most serious fault of a row is the one that stays.
        reason = value_code
        reason[(np.abs(value) > MAX_ABS_VALUE) & (reason == 0)] = _CODE["value_out_of_range"]
        reason[(value < 0) & (codes != _REFUND) & (reason == 0)] = _CODE["negative_value"]
        reason[codes < 0] = _CODE["missing_event_type"]
        np.copyto(reason, time_code, where=time_code > 0)
        np.copyto(reason, user_code, where=user_code > 0)
        accepted = reason == 0

        if not accepted.all():
            # A user first met in a rejected row was registered early; batch() restores the order.
            self._reorder |= bool((index[~accepted] >= users_before).any())
            keep = np.flatnonzero(accepted)
            for i in np.flatnonzero(~accepted).tolist():
                fields = {
                    "user_id": users[i],
                    "event_time": times[i],
                    "event_type": types[i],
                    "value": None if values is None else values[i],
                }
                code = REJECT_REASONS[reason[i] - 1]
                self.reject(int(lines[i]), code, self._detail(code, fields), fields)
            index, seconds, codes, value = index[keep], seconds[keep], codes[keep], value[keep]
        value = np.where(codes == _REFUND, np.abs(value), value) + 0.0  # + 0.0 turns -0.0 into 0.0
        self._parts.append((index, seconds, codes.astype(np.int8), value))
        self.accepted += int(index.shape[0])
        if locales is not None:
            kept = locales if accepted.all() else [locales[i] for i in np.flatnonzero(accepted).tolist()]
            self._note_locales(index, seconds, kept)

    def _note_locales(self, index: np.ndarray, seconds: np.ndarray, raws: list[str | None]) -> None:
        """Keep each user's locale from their latest row that names a known one (the larger on a tie)."""
        known = self._locale_of_raw
        codes = [known.setdefault(r, locale_code(r)) if r else None for r in raws]
        for i in (i for i, c in enumerate(codes) if c is not None):
            uid, seen = self.user_ids[index[i]], (float(seconds[i]), codes[i])
            if uid not in self._locales or seen > self._locales[uid]:
                self._locales[uid] = seen  # type: ignore[assignment]

    def _detail(self, reason: str, fields: Mapping[str, object]) -> str:
        """Return the human explanation of a field-level reject."""
        if reason == "future_event_time":
            limit = datetime.fromtimestamp(self.not_after or 0.0, UTC).isoformat().replace("+00:00", "Z")
            return f"event_time {_short(fields.get('event_time'))} is later than {limit}, the latest accepted"
        return _detail(reason, fields)

    def _values(self, values: list[object] | None, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (values with NaN for none, reject code per row)."""
        code = np.zeros(n, dtype=np.int8)
        if values is None:
            return np.full(n, np.nan), code
        try:
            parsed = np.array(values, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            parsed = np.full(n, np.nan)
            for i, raw in enumerate(values):
                parsed[i], code[i] = _value(raw)
            return parsed, code
        # NaN stands for an absent value; only a count mismatch or an infinity means a literal nan/inf.
        if np.isinf(parsed).any() or int(np.count_nonzero(np.isnan(parsed))) != values.count(None):
            absent = np.fromiter(map(operator.is_, values, repeat(None)), dtype=bool, count=n)
            code[~np.isfinite(parsed) & ~absent] = _CODE["nonfinite_value"]
        return parsed, code

    def _type_codes(self, types: list[str]) -> np.ndarray:
        """Return the type code per row, -1 where event_type is empty."""
        lookup = self._type_of_raw
        found = list(map(lookup.get, types))
        if None in found:
            if len(lookup) > _CACHE_LIMIT:
                lookup.clear()  # a cache, not a registry: distinct junk types must not grow it forever
            for raw in set(types).difference(lookup):
                name = raw.strip().lower()
                lookup[raw] = type_code(name) if name else -1
            found = list(map(lookup.__getitem__, types))
        return np.array(found, dtype=np.int16)

    def _times(self, times: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (epoch microseconds, reject code per row)."""
        micros, parsed = _parse_times_vectorised(times)
        code = np.zeros(len(times), dtype=np.int8)
        for i in np.flatnonzero(~parsed).tolist():
            text = times[i]
            if not text.strip():
                code[i] = _CODE["missing_event_time"]
                continue
            try:
                micros[i] = _timestamp_us(text)
            except ValueError:
                code[i] = _CODE["bad_event_time"]
        return micros, code

    def _users(self, users: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (user index per row, reject code per row), registering new valid ids in first-seen order."""
        known = self._index
        index = np.array(list(map(known.get, users, repeat(-1))), dtype=np.int32)
        code = np.zeros(len(users), dtype=np.int8)
        unknown = np.flatnonzero(index < 0)
        if unknown.shape[0] == 0:
            return index, code
        raws = [users[i] for i in unknown.tolist()]
        fresh = list(dict.fromkeys(raws))
        invalid: dict[str, int] = {}
        if _all_plain_ids(fresh):
            start = len(self.user_ids)
            self.user_ids.extend(fresh)
            known.update(zip(fresh, range(start, start + len(fresh)), strict=True))
        else:
            invalid = self._register(fresh)
        index[unknown] = np.array(list(map(known.get, raws, repeat(-1))), dtype=np.int32)
        if invalid:
            for i in np.flatnonzero(index < 0).tolist():
                code[i] = invalid[users[i]]
        return index, code

    def _register(self, raws: list[str]) -> dict[str, int]:
        """Give each valid id among these raw fields an index; return {raw: reject code} of the others."""
        known = self._index
        invalid = {}
        for raw in raws:
            verdict = _user_verdict(raw)
            if isinstance(verdict, int):
                invalid[raw] = verdict
                continue
            user_index = known.get(verdict)
            if user_index is None:
                user_index = known[verdict] = len(self.user_ids)
                self.user_ids.append(verdict)
            known[raw] = user_index
        return invalid

    def batch(self) -> EventBatch:
        """Return every accepted event so far as one EventBatch."""
        self.flush()
        if not self._parts:
            return EventBatch.empty()
        index, times, codes, values = (np.concatenate(column) for column in zip(*self._parts, strict=True))
        user_ids = self.user_ids
        if self._reorder:
            # Keep only users with an accepted event, numbered by their first accepted event.
            used, first = np.unique(index, return_index=True)
            order = used[np.argsort(first, kind="stable")]
            renumber = np.empty(len(user_ids), dtype=np.int32)
            renumber[order] = np.arange(order.shape[0], dtype=np.int32)
            user_ids = [user_ids[i] for i in order.tolist()]
            index = renumber[index]
        return EventBatch(
            user_ids=user_ids, user_index=index, time=times, type_code=codes, value=values, locales=self._locales
        )


def _all_plain_ids(raws: list[str]) -> bool:
    """Return whether every raw field is already a valid, stripped user id, checked in C for the batch."""
    # Joined by a printable ASCII separator, the batch is printable ASCII exactly when every id is (for
    # ASCII, printable means free of control characters), and no id has an edge space when no space
    # touches a separator or an end. A false "no" only costs the per-id path.
    joined = ",".join(raws)
    return (
        joined.isascii()
        and joined.isprintable()
        and ", " not in joined
        and " ," not in joined
        and not joined.startswith(" ")
        and not joined.endswith(" ")
        and min(map(len, raws)) > 0
        and max(map(len, raws)) <= MAX_USER_ID_LENGTH
    )


def _user_verdict(raw: str) -> str | int:
    """Return the stripped user id, or the reject code that rules it out."""
    user_id = raw.strip()
    # For ASCII, printable means free of control characters: the common case, decided in C.
    if user_id.isascii() and user_id.isprintable() and 0 < len(user_id) <= MAX_USER_ID_LENGTH:
        return user_id
    if not user_id:
        return _CODE["missing_user_id"]
    if len(user_id) > MAX_USER_ID_LENGTH:
        return _CODE["user_id_too_long"]
    if _CONTROL_CHARS.search(user_id):
        return _CODE["user_id_control_chars"]
    if _SURROGATES.search(user_id):  # only from JSON "\udxxx" escapes; no store could encode it
        return _CODE["bad_encoding"]
    return user_id


def _value(raw: object) -> tuple[float, int]:
    """Return (value, reject code) of one raw value; NaN and code 0 when it is absent."""
    if raw is None:
        return math.nan, 0
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return math.nan, 0
        try:
            number = float(text)
        except ValueError:
            return math.nan, _CODE["bad_value"]
    else:
        try:
            number = float(raw)  # type: ignore[arg-type]
        except OverflowError:
            return math.nan, _CODE["nonfinite_value"]
    if not math.isfinite(number):
        return math.nan, _CODE["nonfinite_value"]
    return number, 0


def _short(value: object) -> str:
    """Return a repr fit for a one-line detail."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _detail(reason: str, fields: Mapping[str, object]) -> str:
    """Return the human explanation of a field-level reject."""
    user_id = str(fields.get("user_id") or "").strip()
    if reason == "missing_user_id":
        return "user_id is empty"
    if reason == "user_id_too_long":
        return f"user_id has {len(user_id)} characters; at most {MAX_USER_ID_LENGTH} are allowed"
    if reason == "user_id_control_chars":
        return "user_id contains control characters"
    if reason == "bad_encoding":
        return "user_id is not valid Unicode"
    if reason == "missing_event_time":
        return "event_time is empty"
    if reason == "bad_event_time":
        return f"event_time {_short(fields.get('event_time'))} is not an ISO 8601 date or date-time"
    if reason == "event_time_out_of_range":
        return f"event_time {_short(fields.get('event_time'))} is before 1970-01-01T00:00:00Z, the earliest accepted"
    if reason == "missing_event_type":
        return "event_type is empty"
    value = _short(fields.get("value"))
    if reason == "bad_value":
        return f"value {value} is not a number"
    if reason == "nonfinite_value":
        return f"value {value} is not finite"
    if reason == "value_out_of_range":
        return f"value {value} is out of range; at most {MAX_ABS_VALUE:g} either way is accepted"
    return f"value {value} is negative; only refund values may be negative"


# --------------------------------------------------------------------------------------------- input bytes


class _Prefixed:
    """A read-only stream that replays the bytes already taken off the front of another stream."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
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


class _Blocks:
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
                f"gzip data decompresses to more than {self._max_inflated} bytes (a gzip bomb, or a file to split)",
            )
        return data

    def _fill_until(self, size: int) -> None:
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
        raise UnreadableFileError(
            self.source,
            f"line {self.line + 1} is longer than {_MAX_LINE_BYTES >> 20} MiB; "
            "the file has no usable line breaks (lines must end in LF or CRLF)",
        )


def _decode(data: bytes) -> tuple[str, list[int]]:
    """Return (text, indexes of lines holding bytes that are not UTF-8) of a block of lines."""
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
        bad = [i for i, line in enumerate(text.split("\n")) if _ESCAPED_BYTES.search(line)]
        return text, bad


# --------------------------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class _Layout:
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
        known = zip(_FIELDS, positions, strict=True)
        return {name: row[pos] for name, pos in known if pos is not None and pos < len(row)}


def _layout(header: str, source: str, line: int) -> _Layout:
    """Return the layout of a CSV header, choosing the delimiter that yields the required columns."""
    best: list[str] = []
    for delimiter in _DELIMITERS:
        names = [name.strip().lower() for name in next(csv.reader([header], delimiter=delimiter), [])]
        if all(column in names for column in REQUIRED_COLUMNS):
            for column in (*REQUIRED_COLUMNS, "value"):
                if names.count(column) > 1:
                    raise UnreadableFileError(source, f"column {column!r} appears more than once in the header", line)
            return _Layout(
                delimiter=delimiter,
                ncols=len(names),
                user=names.index("user_id"),
                time=names.index("event_time"),
                type=names.index("event_type"),
                value=names.index("value") if "value" in names else None,
                # An optional extra: read when there is exactly one; a repeated one is ignored, as other columns are.
                locale=names.index("locale") if names.count("locale") == 1 else None,
            )
        if sum(c in names for c in REQUIRED_COLUMNS) > sum(c in best for c in REQUIRED_COLUMNS) or not best:
            best = names
    missing = ", ".join(column for column in REQUIRED_COLUMNS if column not in best)
    reason = f"header lacks required column(s): {missing}"
    # What the header holds goes in the detail, kept out of logs: in a file without a header row, the
    # "header" is a row of behaviour (a user id, a time, a value).
    if header.lstrip().startswith(("{", "[")):
        reason += " (the content looks like JSON; JSON Lines files should be named .jsonl)"
        detail = None
    elif len(best) == 1:
        detail = (
            f"the header {_short(header)} splits into a single column: "
            "the delimiter must be one of comma, semicolon, tab or |"
        )
    else:
        detail = f"found: {', '.join(best[:12])}"
    raise UnreadableFileError(source, reason, line, detail)


class _CsvReader:
    """Turns blocks of CSV lines into validated chunks: a vectorised path while no quotes appear, csv after."""

    def __init__(self, blocks: _Blocks, builder: _Builder, layout: _Layout, chunk_rows: int) -> None:
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
        text, bad = _decode(data)
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
        """Read this block and every later one with the csv module, tracking where each record starts."""
        bad_lines: set[int] = set()
        reader = csv.reader(self._lines(data, first, bad_lines), delimiter=self.layout.delimiter)
        consumed = 0  # reader.line_num after the last record handled
        while True:
            rows: list[list[str]] = []
            error = None
            try:
                rows.extend(islice(reader, self.chunk_rows))
            except csv.Error as exc:
                error = exc  # rows read before the faulty record are kept by extend
            start = first + consumed
            if rows:
                if error is None and reader.line_num - consumed == len(rows):
                    spans = np.ones(len(rows), dtype=np.int64)
                else:
                    spans = np.fromiter((1 + sum(f.count("\n") for f in row) for row in rows), np.int64, len(rows))
                starts = start + np.concatenate(([0], np.cumsum(spans)[:-1]))
                self._rows(rows, starts, spans, bad_lines)
                start += int(spans.sum())
            if error is not None:
                self.builder.reject(start, "malformed_row", f"unreadable CSV record: {error}", None)
            elif not rows:
                return
            self.builder.flush()
            consumed = reader.line_num
            if bad_lines:
                bad_lines.intersection_update([line for line in bad_lines if line >= first + consumed])

    def _lines(self, data: bytes, first: int, bad_lines: set[int]) -> Iterator[str]:
        """Yield the lines of this block and all later blocks, noting lines that are not UTF-8."""
        block: tuple[bytes, int] | None = (data, first)
        while block is not None:
            text, bad = _decode(block[0])
            bad_lines.update(block[1] + i for i in bad)
            yield from io.StringIO(text, newline="\n")
            block = self.blocks.next_block()

    def _rows(self, rows: list[list[str]], starts: np.ndarray, spans: np.ndarray, bad_lines: set[int]) -> None:
        """Validate csv records: regular ones in bulk, irregular or undecodable ones one by one."""
        width = self.layout.ncols
        bad_rows: set[int] = set()
        for line in bad_lines:
            i = int(np.searchsorted(starts, line, side="right")) - 1
            if i >= 0 and line < starts[i] + spans[i]:
                bad_rows.add(i)
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


# --------------------------------------------------------------------------------------------- JSON Lines


def _json_kind(value: object) -> str:
    """Return the JSON name of a decoded value's type, for messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "string" if isinstance(value, str) else "null"


class _JsonReader:
    """Turns blocks of JSON Lines into validated chunks."""

    def __init__(self, blocks: _Blocks, builder: _Builder) -> None:
        self.blocks = blocks
        self.builder = builder
        decoder = json.JSONDecoder()
        self._decode = decoder.raw_decode
        # The C scanner behind raw_decode, called without its Python wrapper: (obj, end) for one value.
        self._scan = decoder.scan_once

    def run(self) -> None:
        """Read every remaining block."""
        head = self.blocks.first_nonblank()
        if head is not None:
            start = head.strip()
            if start.startswith(b"["):
                raise UnreadableFileError(
                    self.blocks.source, "content is a JSON array; expected JSON Lines (one object per line)"
                )
            if start == b"{":
                raise UnreadableFileError(
                    self.blocks.source, "content is pretty-printed JSON; expected JSON Lines (one object per line)"
                )
        while (block := self.blocks.next_block()) is not None:
            self._block(*block)
            self.builder.flush()

    def _block(self, data: bytes, first: int) -> None:
        text, bad = _decode(data)
        if "\r" in text:
            text = text.replace("\r\n", "\n")  # valid JSON never holds a raw CR; only line ends do
        lines = text.split("\n")
        lines.pop()
        if not bad and self._simple(lines, first):
            return
        bad_set = set(bad)
        decode = self._decode
        reject = self.builder.reject
        objects: list[dict] = []
        at: list[int] = []
        for i, line in enumerate(lines):
            try:
                obj, end = decode(line)
                if end != len(line) and line[end:].strip():
                    raise json.JSONDecodeError("Extra data", line, end)
            except json.JSONDecodeError as exc:
                stripped = line.strip()
                if not stripped:
                    continue  # blank line: not a row
                try:
                    obj = json.loads(stripped)
                except json.JSONDecodeError:
                    if i in bad_set:
                        reject(first + i, "bad_encoding", "row is not valid UTF-8", None)
                    else:
                        reject(first + i, "bad_json", f"not valid JSON: {exc}", None)
                    continue
            if i in bad_set:
                fields = {k: _json_text(v) for k, v in _json_fields(obj).items()} if type(obj) is dict else None
                reject(first + i, "bad_encoding", "row is not valid UTF-8", fields)
                continue
            if type(obj) is not dict:
                reject(first + i, "bad_json", f"a JSON {_json_kind(obj)}, not an object", None)
                continue
            objects.append(obj)
            at.append(first + i)
        if objects:
            self._columns(objects, np.array(at, dtype=np.int64))

    def _simple(self, lines: list[str], first: int) -> bool:
        """Decode a block where every line is exactly one JSON object, in bulk; False if any is not."""
        try:
            parsed = list(map(self._scan, lines, repeat(0)))
        except (StopIteration, ValueError):  # a blank line, leading space, or bad JSON: go line by line
            return False
        if not parsed:
            return True
        objects, ends = zip(*parsed, strict=True)
        if list(ends) != list(map(len, lines)) or set(map(type, objects)) != {dict}:
            return False
        self._columns(list(objects), first + np.arange(len(lines)))
        return True

    def _columns(self, objects: list[dict], lines: np.ndarray) -> None:
        """Pull the fields out of decoded objects, rejecting fields of the wrong JSON type."""
        users = list(map(dict.get, objects, repeat("user_id")))
        times = list(map(dict.get, objects, repeat("event_time")))
        types = list(map(dict.get, objects, repeat("event_type")))
        values = list(map(dict.get, objects, repeat("value")))
        locales = [v if isinstance(v, str) else None for v in map(dict.get, objects, repeat("locale"))]
        n = len(objects)
        if (None in users or None in times or None in types or None in values) and not all(
            map(_FIELD_SET.issuperset, objects)
        ):
            # Keys are matched like CSV headers (case and spaces ignored), paying for it only for objects
            # that lack a field and have keys other than the exact names.
            lacking = np.zeros(n, dtype=bool)
            for column in (users, times, types, values):
                lacking |= np.fromiter(map(operator.is_, column, repeat(None)), dtype=bool, count=n)
            lacking &= ~np.fromiter(map(_FIELD_SET.issuperset, objects), dtype=bool, count=n)
            for i in np.flatnonzero(lacking).tolist():
                fields = _json_fields(objects[i])
                users[i], times[i], types[i] = fields["user_id"], fields["event_time"], fields["event_type"]
                values[i] = fields["value"]
        kinds = set(map(type, users)) | set(map(type, times)) | set(map(type, types))
        value_kinds = set(map(type, values))
        if kinds <= {str} and value_kinds <= {int, float, str, type(None)} and bool not in value_kinds:
            self.builder.add(users, times, types, values, lines, locales)  # type: ignore[arg-type]
            return
        keep = []
        for i in range(n):
            problem = _json_problem(users[i], times[i], types[i], values[i])
            if problem is None:
                keep.append(i)
                user = users[i]
                users[i] = "" if user is None else str(user)
                times[i] = times[i] or ""
                types[i] = types[i] or ""
                continue
            raw = (users[i], times[i], types[i], values[i])
            fields = {name: _json_text(value) for name, value in zip(_FIELDS, raw, strict=True)}
            self.builder.reject(int(lines[i]), problem[0], problem[1], fields)
        self.builder.add(
            [users[i] for i in keep],  # type: ignore[misc]
            [times[i] for i in keep],  # type: ignore[misc]
            [types[i] for i in keep],  # type: ignore[misc]
            [values[i] for i in keep],
            lines[keep],
            [locales[i] for i in keep],
        )


def _json_text(value: object) -> object:
    """Return a decoded JSON value as it would read in the file, for the reject file."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _json_fields(obj: dict) -> dict[str, object]:
    """Return the known fields of a decoded object, keys matched ignoring case and surrounding spaces."""
    if obj.keys() <= _FIELD_SET:
        return {name: obj.get(name) for name in _FIELDS}
    normal = {key.strip().lower(): value for key, value in obj.items()}
    for name in _FIELDS:  # an exact name wins over a look-alike
        if name in obj:
            normal[name] = obj[name]
    return {name: normal.get(name) for name in _FIELDS}


def _json_problem(user: object, time: object, kind: object, value: object) -> tuple[str, str] | None:
    """Return (reason, detail) when a JSON field has a type no conversion fixes, else None."""
    if not (user is None or isinstance(user, str) or (isinstance(user, int) and not isinstance(user, bool))):
        return "malformed_row", f"user_id is a JSON {_json_kind(user)}; expected a string"
    if not (time is None or isinstance(time, str)):
        return "bad_event_time", f"event_time is a JSON {_json_kind(time)}; expected an ISO 8601 string"
    if not (kind is None or isinstance(kind, str)):
        return "malformed_row", f"event_type is a JSON {_json_kind(kind)}; expected a string"
    if isinstance(value, bool) or not (value is None or isinstance(value, (int, float, str))):
        return "bad_value", f"value is a JSON {_json_kind(value)}; expected a number"
    return None


# --------------------------------------------------------------------------------------------- entry points


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


def _read(
    stream: BinaryIO, source: str, fmt: str | None, rows: int, builder: _Builder, max_inflated: int
) -> EventBatch:
    """Detect compression and format, then feed every row to the builder; return the accepted events."""
    blocks = _Blocks(stream, source, block_bytes=max(256, rows * _BYTES_PER_ROW), max_inflated=max_inflated)
    first = blocks.first_nonblank()
    if first is not None:
        kind = fmt or _format_from_name(source) or ("jsonl" if first.lstrip()[:1] in (b"{", b"[") else "csv")
        if kind == "jsonl":
            _JsonReader(blocks, builder).run()
        else:
            line = blocks.line + 1
            blocks.take_line()
            header = first.decode("utf-8", "replace").rstrip("\r")
            _CsvReader(blocks, builder, _layout(header, source, line), rows).run()
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
) -> ReadResult:
    """Read a behaviour file (CSV or JSON Lines, maybe gzip) into events; raise UnreadableFileError if unusable."""
    # chunk_rows caps the rows decoded and validated at a time; events later than not_after (epoch seconds)
    # are rejected as future_event_time; gzip input inflating past max_decompressed_bytes is unreadable.
    # The caller closes result.rejects.
    if fmt not in (None, *_FORMATS):
        raise ValueError(f"fmt must be one of {_FORMATS} or None, not {fmt!r}")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    if max_decompressed_bytes < 1:
        raise ValueError("max_decompressed_bytes must be at least 1")
    own_rejects = rejects is None
    rejects = RejectWriter() if rejects is None else rejects
    builder = _Builder(rejects, not_after)
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
