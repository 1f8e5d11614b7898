"""Merging users' deltas into their stored state under optimistic locking, each run at most once per user."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from chalicelib.runs.applied_runs import AppliedRuns
from chalicelib.runs.context import RunContext
from chalicelib.runs.ports import FAILED, WRITTEN, StateWrite, StoredStates
from chalicelib.runs.records import Run
from chalicelib.scoring.events import EVENT_TYPES
from chalicelib.scoring.scorer import iso_time
from chalicelib.scoring.state import StateBatch, col, empty_rows, merge_rows

# Rounds of re-reading and re-writing users whose conditional write lost a race, before giving up on them.
MAX_WRITE_ROUNDS = 8


@dataclass
class Merged:
    """What a merge round left: stored rows and versions of the users done, and the locales they carry."""

    final: dict[str, np.ndarray]
    versions: dict[str, int]
    locales: dict[str, str]


class StateMerger:
    """Reads, merges and conditionally writes users' state, reading again whenever another run wrote first."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def merge(
        self, run: Run, users: list[str], rows: np.ndarray, snapshot: bool, as_of: dict[str, float]
    ) -> tuple[StateBatch, dict[str, int]]:
        """Merge each user's delta into their stored state under optimistic locking; return what is stored.

        `as_of` is each user's score time, kept with a user who is dead-lettered.
        """
        pending = {uid: rows[i] for i, uid in enumerate(users)}
        merged = Merged({}, {}, {})
        delays = self.ctx.backoff.delays()
        now = self.ctx.clock()
        for _ in range(MAX_WRITE_ROUNDS):
            self._merge_round(run, pending, merged, snapshot, as_of, now)
            if not pending:
                break
            self.ctx.backoff.wait(next(delays, 0.0))
        for uid, row in pending.items():
            run.dead.add_user(uid, as_of[uid], row, snapshot)
        ordered = [uid for uid in users if uid in merged.final]
        values = np.stack([merged.final[uid] for uid in ordered]) if ordered else empty_rows(0)
        run.locales = merged.locales
        return StateBatch(ordered, values), merged.versions

    def _merge_round(
        self,
        run: Run,
        pending: dict[str, np.ndarray],
        merged: Merged,
        snapshot: bool,
        as_of: dict[str, float],
        now: float,
    ) -> None:
        """Read, merge and conditionally write the pending users once; drop from `pending` those settled."""
        stored = self.ctx.tables.get_states(list(pending))
        for uid in stored.unread:  # unknown state cannot be merged into: the delta waits for replay
            run.count("reads_failed")
            run.dead.add_user(uid, as_of[uid], pending.pop(uid), snapshot)
        ids = list(pending)
        if not ids:
            return
        base = stored.batch.subset(ids).values
        delta = np.stack([pending[uid] for uid in ids])
        rows = delta if snapshot else merge_rows(base, delta)
        writes, rows_of = [], {}
        for j, uid in enumerate(ids):
            if stored.applied.get(uid, AppliedRuns()).holds(run.run_id):
                self._keep_applied(run, uid, base[j], stored, merged)
                del pending[uid]
                continue
            writes.append(self._state_write(run, uid, rows[j], stored, snapshot, now))
            rows_of[uid] = rows[j]
        outcomes = self.ctx.tables.put_states(writes)
        for w in writes:
            if self._settle_state(run, w, outcomes[w.user_id], rows_of[w.user_id], pending, merged, snapshot, as_of):
                del pending[w.user_id]

    @staticmethod
    def _keep_applied(run: Run, uid: str, row: np.ndarray, stored: StoredStates, merged: Merged) -> None:
        """Take a user whose state already holds this run (a redo) as stored."""
        run.count("duplicates_suppressed", "state")
        merged.final[uid], merged.versions[uid] = row, stored.versions.get(uid, 0)
        if uid in stored.locales:
            merged.locales[uid] = stored.locales[uid][1]

    def _state_write(
        self, run: Run, uid: str, row: np.ndarray, stored: StoredStates, snapshot: bool, now: float
    ) -> StateWrite:
        """Return the conditional write of one user's merged state, recording this run as applied."""
        applied, overflow = stored.applied.get(uid, AppliedRuns()).record(
            run.run_id, now, self.ctx.settings.applied_runs_max_age
        )
        if overflow:  # more files reached this user within the bound than its item has room to remember
            run.count("applied_runs_overflow", n=overflow)
        # The latest row naming a locale wins, whichever file it came in: the order does not matter.
        known = [loc for loc in (run.file_locales.get(uid), None if snapshot else stored.locales.get(uid)) if loc]
        return state_write(uid, row, run.run_id, stored.versions.get(uid, 0), applied, max(known) if known else None)

    @staticmethod
    def _settle_state(
        run: Run,
        w: StateWrite,
        outcome: str,
        row: np.ndarray,
        pending: dict[str, np.ndarray],
        merged: Merged,
        snapshot: bool,
        as_of: dict[str, float],
    ) -> bool:
        """Record what became of one state write; return True when the user is settled (written or given up)."""
        if outcome == WRITTEN:
            merged.final[w.user_id], merged.versions[w.user_id] = row, w.version
            if w.locale is not None:
                merged.locales[w.user_id] = w.locale[1]
            run.add({"users_new": int(w.expected == 0)})
            return True
        if outcome == FAILED:
            run.dead.add_user(w.user_id, as_of[w.user_id], pending[w.user_id], snapshot)
            return True
        run.count("write_conflicts")  # another run wrote this user since we read it: read again and merge again
        return False


def state_write(
    uid: str, row: np.ndarray, run_id: str, expected: int, applied: AppliedRuns, locale: tuple[float, str] | None
) -> StateWrite:
    """Return the conditional write of one user's state row."""
    events = int(row[[col(f"count_{t}") for t in EVENT_TYPES]].sum())
    return StateWrite(
        user_id=uid,
        blob=row.astype("<f8").tobytes(),
        first_seen=iso_time(row[col("first_seen")]),
        last_seen=iso_time(row[col("last_seen")]),
        last_event=float(row[col("last_seen")]),
        events=events,
        run_id=run_id,
        expected=expected,
        applied=applied,
        locale=locale,
    )
