"""`export --risk-tier T --value-tier V --out FILE.csv`: every current user of a tier pair, for a CRM upload.

It reads through the same lookup as the API (chalicelib/lookup: the risk table's tier index, shard after shard), so
a user is written once and only while their risk item is live. Spreadsheets run a cell that starts with `=`, `+`,
`-`, `@`, a tab or a carriage return as a formula (CSV injection); such a text cell is written with a `'` in front,
as OWASP advises, so the id a CRM keys on reads `'=...` for those users (the API shows it unchanged).
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from chalicelib.lookup.service import RiskLookup
from chalicelib.scoring.scorer import SCORE_COLUMNS

COLUMNS = (*SCORE_COLUMNS, "rfm_segment", "activity_cluster", "exposure_group", "holdout")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Seconds between two progress lines.
PROGRESS_EVERY = 2.0


def export_csv(
    lookup: RiskLookup,
    risk_tier: str,
    value_tier: str,
    out: Path,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Write every live user of a tier pair to `out` (replaced whole once complete); return the users written."""
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    partial = out.with_name(f".{out.name}.partial")
    with partial.open("w", newline="", encoding="utf-8") as fh:
        written = write_rows(lookup.every(risk_tier, value_tier), fh, _Progress(say, clock))
    os.replace(partial, out)
    return written


def write_rows(users: Iterable[tuple[dict[str, Any], float]], fh: TextIO, progress: _Progress | None = None) -> int:
    """Write the header and one row per user view to `fh`; return the rows written."""
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(COLUMNS)
    written = 0
    for user, done in users:
        writer.writerow(row(user))
        written += 1
        if progress is not None:
            progress.tick(written, done)
    if progress is not None:
        progress.finish(written)
    return written


def row(user: dict[str, Any]) -> list[Any]:
    """Return one user's CSV row: reasons `;`-joined, holdout as true/false, text cells defused."""
    exposure = user.get("exposure") or {}
    cells = {
        **user,
        "reasons": ";".join(user.get("reasons", [])),
        "action": user.get("action") or "",
        "exposure_group": exposure.get("group", ""),
        "holdout": "true" if user.get("holdout") else "false",
    }
    return [_cell(cells.get(column)) for column in COLUMNS]


def _cell(value: Any) -> Any:
    """Return a cell as written: numbers as they are, a text that a spreadsheet would run as a formula defused."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class _Progress:
    """Prints a line every PROGRESS_EVERY seconds: users written, share of the index read, elapsed and ETA."""

    def __init__(self, say: Callable[[str], None], clock: Callable[[], float]) -> None:
        self.say, self.clock = say, clock
        self.started = self.last = clock()

    def tick(self, written: int, done: float) -> None:
        now = self.clock()
        if now - self.last < PROGRESS_EVERY:
            return
        self.last = now
        elapsed = now - self.started
        # The shards hold about as many users each (a hash of the user id), so the share read predicts the rest.
        eta = f", about {elapsed * (1 - done) / done:.0f} s left" if done > 0 else ""
        self.say(f"export: {written:,} users, {done:.0%} of the index read, {elapsed:.0f} s{eta}")

    def finish(self, written: int) -> None:
        self.say(f"export: {written:,} users written in {self.clock() - self.started:.1f} s")
