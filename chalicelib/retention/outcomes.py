"""Did retention work? Exposures (a message sent, or withheld from the holdout), returns, and the lift report.

An exposure is a user who was due an action at some `as_of`: the treated got the message, the holdout
did not. A user has returned when any event of theirs falls in (exposed_at, exposed_at + horizon]. The
first such event is kept as the minimum over every file that brings one, so the outcome does not depend
on the order files arrive in. The report compares win-back rates of treated and holdout users per risk
tier and action, with a 95% interval for the difference (Newcombe's hybrid score interval, which stays
sensible for small groups and rates near 0 or 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from chalicelib.ingest import parse_timestamp
from chalicelib.scoring.events import EventBatch
from chalicelib.scoring.scorer import iso_time

TREATED, HOLDOUT = "treated", "holdout"
# What became of an exposure (`outcome`): a return within the horizon, none by its end, or not known yet.
OUTCOMES: tuple[str, ...] = ("returned", "lost", "pending")
Z95 = 1.959963984540054


class EventIndex:
    """The event times of each user of a file, sorted, to find a user's first event after a time.

    The sort waits for the first question: most files hold no user with an exposure, and they pay nothing.
    """

    def __init__(self, events: EventBatch) -> None:
        self.events = events
        self.row = {uid: i for i, uid in enumerate(events.user_ids)}
        self._sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def first_after(self, user_id: str, t: float) -> float | None:
        """Return the time of the user's first event strictly after `t`, or None."""
        i = self.row.get(user_id)
        if i is None:
            return None
        times, start, end = self._index()
        own = times[start[i] : end[i]]
        k = int(np.searchsorted(own, t, side="right"))
        return float(own[k]) if k < len(own) else None

    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._sorted is None:
            events = self.events
            order = np.lexsort((events.time, events.user_index))
            users = events.user_index[order]
            every = np.arange(len(events.user_ids))
            starts = np.searchsorted(users, every, side="left")
            ends = np.searchsorted(users, every, side="right")
            self._sorted = (events.time[order], starts, ends)
        return self._sorted


def exposure_from_item(item: dict[str, Any]) -> dict[str, Any]:
    """Return the exposure a risk item holds, as the report reads it."""
    return {
        "user_id": item["user_id"],
        "exposed_at": item["exposed_at"],
        "group": item["exposure_group"],
        "risk_tier": item["exposure_tier"],
        "action": item["exposure_action"],
        "returned_at": item.get("returned_at"),
    }


def identity(exposure: dict[str, Any]) -> tuple[str, str]:
    """Return what names an exposure: its user and when they were exposed."""
    return exposure["user_id"], exposure["exposed_at"]


def distinct_exposures(exposures: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return each exposure once, by its identity (user and time), with the earliest return any copy saw.

    An exposure is kept as closed before the write that replaces it, so after a crash, or a write that lost a
    race, the same exposure may be found closed and still open, or closed by two attempts.
    """
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for e in exposures:
        kept = seen.setdefault(identity(e), dict(e))
        returns = [r for r in (kept.get("returned_at"), e.get("returned_at")) if r]
        kept["returned_at"] = min(returns, key=parse_timestamp) if returns else None
    return list(seen.values())


def outcome(exposure: dict[str, Any], horizon_days: float, as_of: float) -> str:
    """Return `returned`, `lost` (the horizon passed without a return) or `pending`."""
    start = parse_timestamp(exposure["exposed_at"])
    end = start + horizon_days * 86400.0
    returned = exposure.get("returned_at")
    if returned and parse_timestamp(returned) <= end:
        return "returned"
    return "lost" if as_of >= end else "pending"


def lift_report(
    exposures: Iterable[dict[str, Any]], horizon_days: float, as_of: float, since: float | None = None
) -> dict[str, Any]:
    """Return win-back rates of treated against holdout, overall and per risk tier and action; each exposure once."""
    return report_from_cells(
        lift_cells(distinct_exposures(exposures), horizon_days, as_of, since), horizon_days, as_of, since
    )


# Partial sums of the lift report: outcome counts per group, by "tier<US>action". Sums of disjoint sets of
# exposures add up (add_cells), so workers that each see some users can each give their part.
Cells = dict[str, dict[str, dict[str, int]]]
CELL_SEP = "\x1f"


def lift_cells(
    exposures: Iterable[dict[str, Any]], horizon_days: float, as_of: float, since: float | None = None
) -> Cells:
    """Return the outcome counts of `exposures` (taken as distinct) per group, overall and per risk tier and action."""
    cells: Cells = {}
    for e in exposures:
        if since is not None and parse_timestamp(e["exposed_at"]) < since:
            continue
        result = outcome(e, horizon_days, as_of)
        for tier, action in (("all", "all"), (e["risk_tier"], e["action"])):
            key = f"{tier}{CELL_SEP}{action}"
            group = cells.setdefault(key, {TREATED: _zero(), HOLDOUT: _zero()})[e["group"]]
            group[result] += 1
    return cells


def add_cells(total: Cells, part: Cells, sign: int = 1) -> Cells:
    """Add (or with `sign` -1, take away) one part's outcome counts into `total`; return `total`."""
    for key, groups in part.items():
        into = total.setdefault(key, {TREATED: _zero(), HOLDOUT: _zero()})
        for name, counts in groups.items():
            for result, n in counts.items():
                into[name][result] += sign * n
    return total


def report_from_cells(cells: Cells, horizon_days: float, as_of: float, since: float | None = None) -> dict[str, Any]:
    """Return the lift report of summed outcome counts."""
    keyed = {tuple(key.split(CELL_SEP, 1)): groups for key, groups in cells.items()}
    rows = [_row(tier, action, groups) for (tier, action), groups in sorted(keyed.items(), key=_order)]
    since_iso = iso_time(since) if since is not None else None
    return {"horizon_days": horizon_days, "as_of": iso_time(as_of), "since": since_iso, "rows": rows}


def newcombe_interval(x1: int, n1: int, x2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Return the interval of p1 - p2 from Wilson intervals of each rate (Newcombe 1998, method 10)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Return the Wilson score interval of a rate x / n."""
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _row(tier: str, action: str, groups: dict[str, dict[str, int]]) -> dict[str, Any]:
    row: dict[str, Any] = {"risk_tier": tier, "action": action}
    for name, g in groups.items():
        resolved = g["returned"] + g["lost"]
        rate = g["returned"] / resolved if resolved else None
        row[name] = {**g, "win_back_rate": None if rate is None else round(rate, 4)}
    t, h = groups[TREATED], groups[HOLDOUT]
    nt, nh = t["returned"] + t["lost"], h["returned"] + h["lost"]
    if nt and nh:
        lo, hi = newcombe_interval(t["returned"], nt, h["returned"], nh)
        row["lift"] = round(t["returned"] / nt - h["returned"] / nh, 4)
        row["lift_ci95"] = [round(lo, 4), round(hi, 4)]
    else:
        row["lift"], row["lift_ci95"] = None, None  # one group has no resolved users yet
    return row


def _order(item: tuple[tuple[str, str], Any]) -> tuple[int, str, str]:
    (tier, action), _ = item
    return ({"all": 0, "high": 1, "medium": 2, "low": 3}.get(tier, 4), tier, action)


def _zero() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)
