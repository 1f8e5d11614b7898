"""JSON Lines rows: blocks of lines decoded into objects and their fields pulled out as columns."""

from __future__ import annotations

import json
import operator
from itertools import repeat

import numpy as np

from chalicelib.errors import UnreadableFileError
from chalicelib.ingest.rejects import FIELDS
from chalicelib.ingest.stream import Blocks, decode
from chalicelib.ingest.validate import Builder

__all__ = ["JsonReader"]

_FIELD_SET = frozenset(FIELDS)
# Field columns of a chunk: user ids, times, types, values (raw decoded JSON values, None when absent).
_Columns = tuple[list[object], list[object], list[object], list[object]]


# Python's JSON decoder recurses once per nesting level; a row nested past the interpreter's limit is refused
# as that row alone, never as the file (a RecursionError would fail the whole run on every attempt).
TOO_DEEP = "JSON nested too deeply to read"


class JsonReader:
    """Turns blocks of JSON Lines into validated chunks."""

    def __init__(self, blocks: Blocks, builder: Builder) -> None:
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
            _refuse_whole_json(head.strip(), self.blocks.source)
        while (block := self.blocks.next_block()) is not None:
            self._block(*block)
            self.builder.flush()

    def _block(self, data: bytes, first: int) -> None:
        """Validate one block of lines: in bulk when every line is one object, else line by line."""
        text, bad = decode(data)
        if "\r" in text:
            text = text.replace("\r\n", "\n")  # valid JSON never holds a raw CR; only line ends do
        lines = text.split("\n")
        lines.pop()
        if not bad and self._simple(lines, first):
            return
        bad_set = set(bad)
        objects: list[dict] = []
        at: list[int] = []
        for i, line in enumerate(lines):
            obj = self._object(line, first + i, i in bad_set)
            if obj is not None:
                objects.append(obj)
                at.append(first + i)
        if objects:
            self._columns(objects, np.array(at, dtype=np.int64))

    def _object(self, line: str, number: int, bad_encoding: bool) -> dict | None:
        """Return the object one line holds; None for a blank line or after rejecting the line."""
        try:
            obj, end = self._decode(line)
            if end != len(line) and line[end:].strip():
                raise json.JSONDecodeError("Extra data", line, end)
        except RecursionError:
            self.builder.reject(number, "bad_json", TOO_DEEP, None)
            return None
        except json.JSONDecodeError as exc:
            stripped = line.strip()
            if not stripped:
                return None  # blank line: not a row
            try:
                obj = json.loads(stripped)
            except RecursionError:
                self.builder.reject(number, "bad_json", TOO_DEEP, None)
                return None
            except json.JSONDecodeError:
                if bad_encoding:
                    self.builder.reject(number, "bad_encoding", "row is not valid UTF-8", None)
                else:
                    self.builder.reject(number, "bad_json", f"not valid JSON: {exc}", None)
                return None
        if bad_encoding:
            fields = {k: _json_text(v) for k, v in _json_fields(obj).items()} if type(obj) is dict else None
            self.builder.reject(number, "bad_encoding", "row is not valid UTF-8", fields)
            return None
        if type(obj) is not dict:
            self.builder.reject(number, "bad_json", f"a JSON {_json_kind(obj)}, not an object", None)
            return None
        return obj

    def _simple(self, lines: list[str], first: int) -> bool:
        """Decode a block where every line is exactly one JSON object, in bulk; False if any is not."""
        try:
            parsed = list(map(self._scan, lines, repeat(0)))
        # A blank line, leading space, bad JSON or nesting deeper than the decoder recurses: go line by line.
        except (StopIteration, ValueError, RecursionError):
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
        columns = _exact_fields(objects)
        locales = [v if isinstance(v, str) else None for v in map(dict.get, objects, repeat("locale"))]
        _match_loose_keys(objects, columns)
        if _all_usable(columns):
            self.builder.add(*columns, lines, locales)  # type: ignore[arg-type]
            return
        keep = self._sift(columns, lines)
        users, times, types, values = columns
        self.builder.add(
            [users[i] for i in keep],  # type: ignore[misc]
            [times[i] for i in keep],  # type: ignore[misc]
            [types[i] for i in keep],  # type: ignore[misc]
            [values[i] for i in keep],
            lines[keep],
            [locales[i] for i in keep],
        )

    def _sift(self, columns: _Columns, lines: np.ndarray) -> list[int]:
        """Reject rows holding a field of the wrong JSON type; return the others, their fields made text."""
        users, times, types, values = columns
        keep = []
        for i in range(len(users)):
            problem = _json_problem(users[i], times[i], types[i], values[i])
            if problem is None:
                keep.append(i)
                user = users[i]
                users[i] = "" if user is None else str(user)
                times[i] = times[i] or ""
                types[i] = types[i] or ""
                continue
            raw = (users[i], times[i], types[i], values[i])
            fields = {name: _json_text(value) for name, value in zip(FIELDS, raw, strict=True)}
            self.builder.reject(int(lines[i]), problem[0], problem[1], fields)
        return keep


def _refuse_whole_json(start: bytes, source: str) -> None:
    """Raise when the first line shows a JSON document rather than JSON Lines."""
    if start.startswith(b"["):
        raise UnreadableFileError(source, "content is a JSON array; expected JSON Lines (one object per line)")
    if start == b"{":
        raise UnreadableFileError(source, "content is pretty-printed JSON; expected JSON Lines (one object per line)")


def _exact_fields(objects: list[dict]) -> _Columns:
    """Return the columns of the fields under their exact names."""
    return (
        list(map(dict.get, objects, repeat("user_id"))),
        list(map(dict.get, objects, repeat("event_time"))),
        list(map(dict.get, objects, repeat("event_type"))),
        list(map(dict.get, objects, repeat("value"))),
    )


def _match_loose_keys(objects: list[dict], columns: _Columns) -> None:
    """Fill in, in place, fields whose keys differ from the names in case or surrounding spaces."""
    # Keys are matched like CSV headers (case and spaces ignored), paying for it only for objects
    # that lack a field and have keys other than the exact names.
    if not any(None in column for column in columns) or all(map(_FIELD_SET.issuperset, objects)):
        return
    n = len(objects)
    lacking = np.zeros(n, dtype=bool)
    for column in columns:
        lacking |= np.fromiter(map(operator.is_, column, repeat(None)), dtype=bool, count=n)
    lacking &= ~np.fromiter(map(_FIELD_SET.issuperset, objects), dtype=bool, count=n)
    for i in np.flatnonzero(lacking).tolist():
        fields = _json_fields(objects[i])
        for column, name in zip(columns, FIELDS, strict=True):
            column[i] = fields[name]


def _all_usable(columns: _Columns) -> bool:
    """Return whether every field has a JSON type the builder takes as it is: strings, and numbers for values."""
    users, times, types, values = columns
    kinds = set(map(type, users)) | set(map(type, times)) | set(map(type, types))
    value_kinds = set(map(type, values))
    return kinds <= {str} and value_kinds <= {int, float, str, type(None)} and bool not in value_kinds


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


def _json_text(value: object) -> object:
    """Return a decoded JSON value as it would read in the file, for the reject file."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _json_fields(obj: dict) -> dict[str, object]:
    """Return the known fields of a decoded object, keys matched ignoring case and surrounding spaces."""
    if obj.keys() <= _FIELD_SET:
        return {name: obj.get(name) for name in FIELDS}
    normal = {key.strip().lower(): value for key, value in obj.items()}
    for name in FIELDS:  # an exact name wins over a look-alike
        if name in obj:
            normal[name] = obj[name]
    return {name: normal.get(name) for name in FIELDS}


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
