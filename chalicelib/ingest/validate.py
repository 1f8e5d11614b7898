"""Validation of raw fields into events: per-row verdicts on user, time, type and value, kept as an EventBatch."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import repeat

import numpy as np

from chalicelib.errors import FileTooLargeError
from chalicelib.ingest.budget import held_bytes, mib
from chalicelib.ingest.rejects import CODE, MAX_ABS_VALUE, REJECT_REASONS, SURROGATES, RejectWriter, detail, short
from chalicelib.ingest.timestamps import US, parse_times_vectorised, timestamp_us
from chalicelib.scoring.events import MAX_USER_ID_LENGTH, TYPE_CODE, EventBatch, locale_code, type_code

__all__ = ["Builder"]

_REFUND = TYPE_CODE["refund"]
_CACHE_LIMIT = 100_000
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")


class Builder:
    """Validates columns of raw fields chunk by chunk and accumulates the accepted events as arrays."""

    def __init__(
        self,
        rejects: RejectWriter,
        not_after: float | None,
        *,
        source: str = "",
        max_memory_bytes: int | None = None,
    ) -> None:
        self.rejects = rejects
        self.not_after = not_after
        self.source = source
        self.max_memory_bytes = max_memory_bytes
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
        seconds, time_code = self._times(times)
        users_before = len(self.user_ids)
        index, user_code = self._users(users)
        reason = _reasons(value, value_code, codes, time_code, user_code)
        accepted = reason == 0
        if not accepted.all():
            # A user first met in a rejected row was registered early; batch() restores the order.
            self._reorder |= bool((index[~accepted] >= users_before).any())
            self._reject_rows(np.flatnonzero(~accepted).tolist(), reason, (users, times, types, values), lines)
            keep = np.flatnonzero(accepted)
            index, seconds, codes, value = index[keep], seconds[keep], codes[keep], value[keep]
        value = np.where(codes == _REFUND, np.abs(value), value) + 0.0  # + 0.0 turns -0.0 into 0.0
        self._parts.append((index, seconds, codes.astype(np.int8), value))
        self.accepted += int(index.shape[0])
        if locales is not None:
            kept = locales if accepted.all() else [locales[i] for i in np.flatnonzero(accepted).tolist()]
            self._note_locales(index, seconds, kept)
        self._check_budget(int(lines[-1]))

    def _check_budget(self, line: int) -> None:
        """Refuse the file as soon as what it has brought so far would not fit in its memory budget."""
        if self.max_memory_bytes is None:
            return
        held = held_bytes(self.accepted, len(self.user_ids))
        if held > self.max_memory_bytes:
            raise FileTooLargeError(
                self.source,
                f"by line {line:,} it holds {self.accepted:,} events of {len(self.user_ids):,} users, about "
                f"{mib(held)} in memory, past the {mib(self.max_memory_bytes)} a file may take "
                "(FILE_MEMORY_BUDGET_MB, by default derived from the function's memory); "
                "split the file or give the function more memory",
            )

    def _reject_rows(
        self, rows: list[int], reason: np.ndarray, columns: tuple[list, list, list, list | None], lines: np.ndarray
    ) -> None:
        """Reject the given rows of a chunk, each for its reason code, with its raw fields."""
        users, times, types, values = columns
        for i in rows:
            fields = {
                "user_id": users[i],
                "event_time": times[i],
                "event_type": types[i],
                "value": None if values is None else values[i],
            }
            code = REJECT_REASONS[reason[i] - 1]
            self.reject(int(lines[i]), code, self._detail(code, fields), fields)

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
            return f"event_time {short(fields.get('event_time'))} is later than {limit}, the latest accepted"
        return detail(reason, fields)

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
            code[~np.isfinite(parsed) & ~absent] = CODE["nonfinite_value"]
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
        """Return (epoch seconds, reject code per row), range checks included."""
        micros, parsed = parse_times_vectorised(times)
        code = np.zeros(len(times), dtype=np.int8)
        for i in np.flatnonzero(~parsed).tolist():
            text = times[i]
            if not text.strip():
                code[i] = CODE["missing_event_time"]
                continue
            try:
                micros[i] = timestamp_us(text)
            except ValueError:
                code[i] = CODE["bad_event_time"]
        # Before the epoch is never a real event here, only a default date (0001-01-01, 1900-01-01) or a typo.
        seconds = micros / US
        code[(code == 0) & (micros < 0)] = CODE["event_time_out_of_range"]
        if self.not_after is not None:
            code[(code == 0) & (seconds > self.not_after)] = CODE["future_event_time"]
        return seconds, code

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


def _reasons(
    value: np.ndarray, value_code: np.ndarray, codes: np.ndarray, time_code: np.ndarray, user_code: np.ndarray
) -> np.ndarray:
    """Return the reject code per row, 0 where accepted: the most serious of its faults."""
    # Assigned least serious first, so the most serious fault of a row is the one that stays.
    reason = value_code
    reason[(np.abs(value) > MAX_ABS_VALUE) & (reason == 0)] = CODE["value_out_of_range"]
    reason[(value < 0) & (codes != _REFUND) & (reason == 0)] = CODE["negative_value"]
    reason[codes < 0] = CODE["missing_event_type"]
    np.copyto(reason, time_code, where=time_code > 0)
    np.copyto(reason, user_code, where=user_code > 0)
    return reason


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
        return CODE["missing_user_id"]
    if len(user_id) > MAX_USER_ID_LENGTH:
        return CODE["user_id_too_long"]
    if _CONTROL_CHARS.search(user_id):
        return CODE["user_id_control_chars"]
    if SURROGATES.search(user_id):  # only from JSON "\udxxx" escapes; no store could encode it
        return CODE["bad_encoding"]
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
            return math.nan, CODE["bad_value"]
    else:
        try:
            number = float(raw)  # type: ignore[arg-type]
        except OverflowError:
            return math.nan, CODE["nonfinite_value"]
    if not math.isfinite(number):
        return math.nan, CODE["nonfinite_value"]
    return number, 0
