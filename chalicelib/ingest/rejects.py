"""Rejected rows: the reason codes, their human details, and the reject CSV they are written to."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from chalicelib.scoring.events import MAX_USER_ID_LENGTH

__all__ = ["CODE", "FIELDS", "MAX_ABS_VALUE", "REJECT_REASONS", "SURROGATES", "RejectWriter", "detail", "short"]

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
CODE = {reason: code for code, reason in enumerate(REJECT_REASONS, start=1)}  # 0 means accepted
# The fields of a row, as the reject file shows them.
FIELDS = ("user_id", "event_time", "event_type", "value")
# No real amount or duration is this large; such values are unit or parsing errors that would swamp features.
MAX_ABS_VALUE = 1e9
SURROGATES = re.compile("[\ud800-\udfff]")
_REJECT_FIELD_CHARS = 256
# Details of the reasons that need no more than the row's fields; {time} and {value} are their shortened reprs.
_DETAILS = {
    "missing_user_id": "user_id is empty",
    "user_id_control_chars": "user_id contains control characters",
    "bad_encoding": "user_id is not valid Unicode",
    "missing_event_time": "event_time is empty",
    "bad_event_time": "event_time {time} is not an ISO 8601 date or date-time",
    "event_time_out_of_range": "event_time {time} is before 1970-01-01T00:00:00Z, the earliest accepted",
    "missing_event_type": "event_type is empty",
    "bad_value": "value {value} is not a number",
    "nonfinite_value": "value {value} is not finite",
    "value_out_of_range": f"value {{value}} is out of range; at most {MAX_ABS_VALUE:g} either way is accepted",
    "negative_value": "value {value} is negative; only refund values may be negative",
}


def short(value: object) -> str:
    """Return a repr fit for a one-line detail."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def detail(reason: str, fields: Mapping[str, object]) -> str:
    """Return the human explanation of a field-level reject."""
    if reason == "user_id_too_long":
        user_id = str(fields.get("user_id") or "").strip()
        return f"user_id has {len(user_id)} characters; at most {MAX_USER_ID_LENGTH} are allowed"
    template = _DETAILS.get(reason, _DETAILS["negative_value"])
    return template.format(time=short(fields.get("event_time")), value=short(fields.get("value")))


def _clip(value: object) -> str:
    """Return a field as reject-CSV text: bounded length, undecodable bytes shown as U+FFFD."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text[:_REJECT_FIELD_CHARS]
    return text if text.isascii() else SURROGATES.sub("\ufffd", text)


class RejectWriter:
    """Collects rejected rows as CSV in a tempfile.SpooledTemporaryFile (bounded memory)."""

    COLUMNS = ("line", "reason", "detail", *FIELDS)

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

    def summary(self, written: bool = True) -> str:
        """Return how many rows were rejected and why; with `written`, also how many the file holds when that is
        not all of them."""
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items()))
        cap = f"; the first {self.written:,} are written, the rest only counted" if written and self.truncated else ""
        return f"{self.count} rejected rows ({reasons}){cap}"

    def write_to(self, path: Path) -> bool:
        """Write the reject CSV to a local file, or remove an earlier one there when no row was rejected (it would
        speak for this file); return whether a row was rejected. The caller has checked the path is its own."""
        if not self.count:
            path.unlink(missing_ok=True)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_bytes())
        return True

    def add(self, line: int, reason: str, detail: str, fields: Mapping[str, object] | None) -> None:
        """Record one rejected row."""
        self.count += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if self.written >= self.max_rows:
            return
        values = [_clip(fields.get(name)) for name in FIELDS] if fields else [""] * len(FIELDS)
        self._csv.writerow([line, reason, _clip(detail), *values])
        self.written += 1
        if self._text.tell() > 65536:
            self._flush()

    def _flush(self) -> None:
        """Move the CSV text gathered so far into the spool file."""
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
