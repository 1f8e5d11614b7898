"""ISO 8601 timestamps to epoch time: an exact per-text parser and a vectorised one for the common layouts."""

from __future__ import annotations

import re
from datetime import date

import numpy as np

__all__ = ["US", "parse_times_vectorised", "parse_timestamp", "timestamp_us"]

US = 1_000_000  # microseconds per second
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?"
    r"(?:[Zz]|([+-])([0-9]{2})(?::?([0-9]{2}))?)?)?"
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_TS_MAX = 40  # longest layout the vectorised parser takes is 36: date, time, 10 fraction digits, +HH:MM
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_FRACTION_SCALE = np.array([100_000, 10_000, 1_000, 100, 10, 1], dtype=np.int64)


def timestamp_us(text: str) -> int:
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
    return seconds * US + micros


def parse_timestamp(text: str) -> float:
    """Return epoch seconds (UTC) of an ISO 8601 date or date-time (no offset means UTC); raise ValueError."""
    return timestamp_us(text) / US


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


def parse_times_vectorised(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (epoch microseconds, parsed mask) for the common ISO layouts; unmasked rows need timestamp_us.

    Takes YYYY-MM-DD, or that plus [T ]HH:MM:SS[.f+][Z|+HH:MM|+HHMM|+HH]; every other form (and any junk)
    is left to the exact per-row parser, so this only has to agree with it on what it accepts.
    """
    n = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    c = _byte_columns(texts, lengths)
    days, ok = _dates(c, lengths)
    date_only = (c[10] == 0) & (lengths == 10)
    clock, timed = _clock(c)
    micros, tz_at, tz, ok_fraction = _fraction(c, n)
    offset, zoned = _zone(tz, tz_at, lengths)
    timed &= ok_fraction & zoned
    seconds = days * 86400 + np.where(timed, clock - offset, 0)
    micros = np.where(timed, micros, 0)
    return seconds * US + micros, ok & (date_only | timed)


def _byte_columns(texts: list[str], lengths: np.ndarray) -> _ByteColumns:
    """Return the texts as rows of ASCII codes; a text that is not ASCII becomes empty (left to the exact parser)."""
    # As narrow as the longest text: copying into wide rows costs more than the parsing.
    width = min(int(lengths.max(initial=0)), _TS_MAX - 1) + 1
    try:
        raw = np.array(texts, dtype=f"S{width}")
    except UnicodeEncodeError:
        raw = np.array([t if t.isascii() else "" for t in texts], dtype=f"S{width}")
    return _ByteColumns(raw.view(np.uint8).reshape(len(texts), width))


def _dates(c: _ByteColumns, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (days since the epoch, valid-date mask) of the YYYY-MM-DD each text starts with."""
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
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468, ok


def _clock(c: _ByteColumns) -> tuple[np.ndarray, np.ndarray]:
    """Return (seconds into the day, valid-time mask) of a [T ]HH:MM:SS after the date."""
    separator = c[10]
    hour, ok_hour = c.digits(11, 12)
    minute, ok_minute = c.digits(14, 15)
    second, ok_second = c.digits(17, 18)
    timed = ((separator == 84) | (separator == 32)) & ok_hour & ok_minute & ok_second
    timed &= (c[13] == 58) & (c[16] == 58) & (hour <= 23) & (minute <= 59) & (second <= 59)
    return hour * 3600 + minute * 60 + second, timed


def _fraction(c: _ByteColumns, n: int) -> tuple[np.ndarray, np.ndarray, _ByteColumns, np.ndarray]:
    """Return (microseconds of a .fraction, column the zone starts at, the zone's columns, valid mask)."""
    dot = c[19] == 46
    if not dot.any():  # whole seconds everywhere: the zone starts at a fixed column
        micros, tz_at = np.zeros(n, dtype=np.int64), np.full(n, 19, dtype=np.int64)
        return micros, tz_at, _ByteColumns(c.codes[:, 19:25]), np.ones(n, dtype=bool)
    codes = np.zeros((n, _TS_MAX), dtype=np.uint8)  # fraction and zone columns vary per row
    codes[:, : c.codes.shape[1]] = c.codes
    frac_digits = (codes[:, 20:30] >= 48) & (codes[:, 20:30] <= 57)
    run = np.cumprod(frac_digits, axis=1, dtype=np.int64)
    frac_len = run.sum(axis=1)
    micros = ((codes[:, 20:26].astype(np.int64) - 48) * run[:, :6] * _FRACTION_SCALE).sum(axis=1)
    tz_at = np.where(dot, 20 + frac_len, 19)
    tz = _ByteColumns(np.take_along_axis(codes, tz_at[:, None] + np.arange(6), axis=1))
    return np.where(dot, micros, 0), tz_at, tz, ~dot | (frac_len >= 1)


def _zone(tz: _ByteColumns, tz_at: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (UTC offset in seconds, valid-zone mask) of what follows the time: nothing, Z, or a signed offset."""
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
    offset = np.where(signed, (off_hour * 3600 + off_minute * 60) * np.where(tz_char == 45, -1, 1), 0)
    return offset, naive | zulu | signed
