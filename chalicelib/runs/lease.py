"""One attempt at a time per run: a lease with an expiry, taken when a run starts, renewed before each chunk and
released when it ends.

S3 and EventBridge deliver an event at least once, and copies may run at the same moment in different containers.
Copies share the run id, so without a lease each would read the other's pending message claims as its own redo and
send them again. A copy that finds the run's lease live leaves the run to its holder: it ends `in_progress`, sends
nothing and raises nothing (a raise would only have Lambda deliver it again). A holder whose renewal is refused (its
lease ran out and another attempt took the run over) stops before its next chunk and leaves the run to the taker.

A lease lasts until the end of its invocation (`Deadline.ends_at`, from the time the Lambda context has left) plus
a margin for the clocks of different hosts: a holder is never overtaken while it can still run, and
one killed without releasing it (a timeout, out of memory) holds the run at most LEASE_MARGIN_SECONDS past its
invocation's end. A run without a deadline (the command line) holds it for Lambda's longest timeout from each
renewal, so there the renewals move it on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from chalicelib.errors import ChurnGuardError
from chalicelib.runs.context import RunContext
from chalicelib.runs.deadline import Deadline
from chalicelib.runs.ports import LeaseHolder, LeaseStore
from chalicelib.scoring.scorer import iso_time

# Past the end of the holder's invocation: covers the clocks of different Lambda hosts.
LEASE_MARGIN_SECONDS = 10.0
# Lambda's longest timeout: how long a run without a deadline holds its lease from each renewal.
UNBOUNDED_LEASE_SECONDS = 900.0


class LeaseLost(ChurnGuardError):
    """Another attempt took over the run's lease: this one must stop before sending anything more."""

    def __init__(self, run_id: str, by: LeaseHolder) -> None:
        self.run_id = run_id
        self.by = by
        super().__init__(f"run {run_id}: the lease was taken over by {by.holder or 'nobody'}")


class Lease:
    """One attempt's hold on one run."""

    def __init__(
        self,
        store: LeaseStore,
        run_id: str,
        clock: Callable[[], float],
        invocation_end: float | None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.clock = clock
        self.invocation_end = invocation_end  # epoch seconds; None without a deadline
        self.holder = uuid.uuid4().hex
        self.until = 0.0

    def take(self) -> LeaseHolder | None:
        """Take the run's lease; return the live holder that has it instead, or None when taken."""
        now = self.clock()
        until = self._until(now)
        other = self.store.take(self.run_id, self.holder, until, now)
        if other is None:
            self.until = until
        return other

    def renew(self) -> None:
        """Move the lease on; raise LeaseLost when another attempt holds it now."""
        until = self._until(self.clock())
        other = self.store.renew(self.run_id, self.holder, until)
        if other is not None:
            raise LeaseLost(self.run_id, other)
        self.until = until

    def release(self) -> None:
        """Give the lease up, so a retry of this run may start at once."""
        self.store.release(self.run_id, self.holder)

    def _until(self, now: float) -> float:
        """Return when a lease taken or renewed at `now` runs out: the invocation's end plus the margin."""
        end = now + UNBOUNDED_LEASE_SECONDS if self.invocation_end is None else self.invocation_end
        return end + LEASE_MARGIN_SECONDS


class LeasedDeadline:
    """The deadline of a run that holds a lease, standing in for its Deadline: asked before each chunk, it renews the
    lease first.

    A run asks its deadline before every chunk (see `Deadline.room_for_another`), so the lease is renewed as the
    run goes, and a run that lost it raises LeaseLost before the chunk instead of sending.
    """

    def __init__(self, deadline: Deadline | LeasedDeadline, lease: Lease) -> None:
        self.deadline = deadline
        self.lease = lease

    @property
    def ends_at(self) -> float | None:
        """Return when the invocation ends, in epoch seconds (None when it has no deadline)."""
        return self.deadline.ends_at

    def room_for_another(self) -> bool:
        """Renew the lease (LeaseLost when it was taken over); return True when another chunk fits in the time."""
        self.lease.renew()
        return self.deadline.room_for_another()

    def start_chunk(self) -> None:
        """Note that a chunk of work starts now."""
        self.deadline.start_chunk()

    def end_chunk(self) -> None:
        """Note that the chunk started last has finished."""
        self.deadline.end_chunk()

    def __getattr__(self, name: str) -> Any:
        # Anything else a run reads off its deadline (the longest chunk, the chunks done) is the deadline's own.
        return getattr(self.deadline, name)


class Leases:
    """Runs the work of one run while holding its lease, or says why it did not."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def exclusive(
        self,
        summary: dict[str, Any],
        deadline: Deadline | LeasedDeadline,
        work: Callable[[LeasedDeadline], dict[str, Any]],
    ) -> dict[str, Any] | None:
        """Return what `work` returns, done under the lease of the summary's run; or None, `summary` saying why not.

        `status` is `in_progress` when another attempt holds the lease, `lease_lost` when one took it over
        mid-run; `held_by` names that attempt and until when its lease lasts.
        """
        run_id = summary["run_id"]
        lease = Lease(self.ctx.tables.leases, run_id, self.ctx.clock, deadline.ends_at)
        other = lease.take()
        if other is not None:
            summary.update(status="in_progress", held_by=_held_by(other))
            self.ctx.logger.info("run in progress elsewhere", extra={"run_id": run_id, **summary["held_by"]})
            return None
        self.ctx.logger.info("lease taken", extra={"run_id": run_id, "holder": lease.holder})
        try:
            return work(LeasedDeadline(deadline, lease))
        except LeaseLost as lost:
            if lost.run_id != run_id:
                raise  # the lease of an enclosing run (the schedule's, around the files it sweeps)
            summary.update(status="lease_lost", held_by=_held_by(lost.by))
            extra = {"run_id": run_id, "holder": lease.holder, "taken_by": summary["held_by"]}
            self.ctx.logger.warning("lease lost", extra=extra)
            return None
        finally:
            lease.release()


def _held_by(holder: LeaseHolder) -> dict[str, str]:
    """Return who holds a lease and until when, for a summary."""
    return {"holder": holder.holder, "until": iso_time(holder.until) if holder.until else ""}
