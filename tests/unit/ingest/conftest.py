"""Helpers shared by the ingest tests: reading text as a file, and what the reject file holds."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import strategies as st

from chalicelib.ingest import ReadResult, read_events
from chalicelib.scoring.events import EVENT_TYPES, TYPE_CODE

HEADER = "user_id,event_time,event_type,value\n"
MARCH_1 = datetime(2024, 3, 1, tzinfo=UTC).timestamp()


class ShortReadStream:
    """Like botocore's StreamingBody: read(n) only, no seek or peek, and it returns short reads."""

    def __init__(self, data: bytes, most: int = 7) -> None:
        self._data = data
        self._pos = 0
        self._most = most

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size is None or size < 0 else min(size, self._most)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk


def read(data: bytes | str, name: str = "events.csv", **kwargs: object) -> ReadResult:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return read_events(io.BytesIO(raw), name, **kwargs)  # type: ignore[arg-type]


def rejects(result: ReadResult) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(result.rejects.to_bytes().decode("utf-8"))))


def reasons_by_line(result: ReadResult) -> dict[int, str]:
    return {int(row["line"]): row["reason"] for row in rejects(result)}


def assert_events_are(result: ReadResult, valid: list[tuple]) -> None:
    """Assert the events read are exactly `valid` (user, seconds, type code, value), in the file's order."""
    assert user_of_each_event(result) == [user for user, _, _, _ in valid]
    assert result.events.time.tolist() == [seconds for _, seconds, _, _ in valid]
    assert result.events.type_code.tolist() == [code for _, _, code, _ in valid]
    expected_values = np.array([np.nan if v is None else v for _, _, _, v in valid], dtype=np.float64)
    np.testing.assert_array_equal(result.events.value, expected_values)


def user_of_each_event(result: ReadResult) -> list[str]:
    return [result.events.user_ids[i] for i in result.events.user_index]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, float]:
    """An ISO timestamp in one of the accepted forms, and its epoch seconds."""
    micros = draw(st.integers(0, 4_102_444_800 * 10**6))  # 1970 .. 2100
    instant = EPOCH + timedelta(microseconds=micros)
    form = draw(st.sampled_from(["date", "naive", "z", "offset", "basic", "frac", "space"]))
    if form == "date":
        return instant.strftime("%Y-%m-%d"), (micros // 86_400_000_000) * 86400.0
    whole = micros - micros % 10**6
    if form == "frac":
        digits = draw(st.integers(1, 9))
        fraction = f"{micros % 10**6:06d}{draw(st.integers(0, 999)):03d}"[:digits]
        exact = whole + int(fraction[:6].ljust(6, "0"))
        return instant.strftime("%Y-%m-%dT%H:%M:%S.") + fraction + "Z", exact / 1e6
    if form in ("offset", "basic"):
        minutes = draw(st.integers(-14 * 60, 14 * 60))
        local = (instant + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S")
        sign, size = ("+" if minutes >= 0 else "-"), abs(minutes)
        colon = ":" if form == "offset" else ""
        return f"{local}{sign}{size // 60:02d}{colon}{size % 60:02d}", whole / 1e6
    text = instant.strftime("%Y-%m-%d %H:%M:%S" if form == "space" else "%Y-%m-%dT%H:%M:%S")
    return text + ("Z" if form == "z" else ""), whole / 1e6


_id_chars = st.sampled_from('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@,;"| éß漢')


@st.composite
def valid_rows(draw: st.DrawFn) -> tuple[list[str], tuple[str, float, int, float | None]]:
    """A valid row's fields, and the event it must become."""
    padded = draw(st.sampled_from(["", " "])) + draw(st.text(_id_chars, min_size=1, max_size=20).filter(str.strip))
    user = padded.strip()
    when, seconds = draw(timestamps())
    kind = draw(st.sampled_from([*EVENT_TYPES[:-1], "Webinar"]))
    shown_kind = draw(st.sampled_from([kind, kind.upper(), f" {kind}"]))
    value = draw(st.none() | st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**6))
    if kind == "refund" and value is not None and draw(st.booleans()):
        value = -value
    text_value = "" if value is None else repr(value)
    expected_value = None if value is None else abs(float(value)) if kind == "refund" else float(value)
    return [padded, when, shown_kind, text_value], (user, seconds, TYPE_CODE.get(kind.lower(), 11), expected_value)


def _to_jsonl(fields: list[str]) -> str:
    if not fields:
        return ""
    if len(fields) > 4:
        return "{broken"
    if fields[0].endswith("\udcff"):
        return '{"user_id": "u\udcff", "event_time": "2024-03-01", "event_type": "login"}'
    row = dict(zip(("user_id", "event_time", "event_type", "value"), fields, strict=True))
    return json.dumps(row)


def file_text(rows: list, as_jsonl: bool) -> str:
    """Return rows of field values as a whole behaviour file: CSV with the header, or JSON Lines."""
    lines = []
    for fields in rows:
        if as_jsonl:
            lines.append(_to_jsonl(fields))
        else:
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerow(fields)
            lines.append(out.getvalue().rstrip("\n"))
    return ("" if as_jsonl else HEADER) + "".join(line + "\n" for line in lines)
