"""The per-run message cap shared by every worker of a run: one counter, taken from one message at a time.

A run in one invocation counts its claims in memory (`Run.messages_claimed`). A run spread over many workers (the
schedule's segments, a backfill's shards) takes each message from one counter per run in DynamoDB instead, with a
conditional atomic update, so the workers together claim exactly the cap, whatever order they run in. The grant
is recorded per chunk of work in the same transaction: a chunk redone after a crash reuses the grants it took.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chalicelib.runs.ports import CapStore

if TYPE_CHECKING:
    from chalicelib.runs.context import RunContext


class SharedMessageCap:
    """One worker's view of its run's shared message counter; `start_chunk` before each chunk of work."""

    def __init__(self, store: CapStore, run_id: str, cap: int, part: str) -> None:
        self.store = store
        self.run_id = run_id
        self.cap = cap
        self.part = part  # the worker's part of the run (a segment, a shard): chunks are named within it
        self.chunk = f"{part}/0"
        self._held: set[str] = set()
        self._loaded = False  # whether the chunk's earlier grants were read (only needed once the cap is reached)
        self._reached = False

    @classmethod
    def of_run(cls, ctx: RunContext, run_id: str, part: str) -> SharedMessageCap:
        """Return `part`'s view of the run's counter, capped at the playbook's `max_messages_per_run`."""
        return cls(ctx.tables.caps, run_id, ctx.scorer.playbook.contact_policy.max_messages_per_run, part)

    def start_chunk(self, index: int) -> None:
        """Name the chunk the next messages belong to: the same index on a redo of the same chunk."""
        self.chunk = f"{self.part}/{index}"
        self._held, self._loaded = set(), False

    def allows(self, old: dict[str, Any], body: dict[str, Any]) -> bool:
        """Return True when the message may go: a grant is taken for it now, or was taken by this chunk before.

        Asked only once the contact policy lets the message go. A pending claim of this run on the item (a redo
        after a crash) took its grant when it was made.
        """
        if old.get("contact_message_id") == body["message_id"]:
            return True
        user_id = body["user_id"]
        if user_id in self._held:
            return True
        if not self._reached:
            if self.store.grant(self.run_id, self.chunk, user_id, self.cap):
                self._held.add(user_id)
                return True
            self._reached = True
        if not self._loaded:
            # The cap is reached: only the grants an earlier attempt at this chunk took are left to honour.
            self._held |= self.store.granted(self.run_id, self.chunk)
            self._loaded = True
        return user_id in self._held
