"""One chunk of users: merge their deltas into stored state (merge.py), score them, write risk items, send messages.

Every step is safe to repeat. The state item says which runs it already holds (no double merge), the risk
item only takes a score at least as new (no roll-back), and the message claim on the risk item lets one run
send a given message once (no duplicate messages).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from chalicelib.ingest import parse_timestamp
from chalicelib.lookup.tier_index import KEY_ATTRIBUTE, tier_key
from chalicelib.reporting.aggregates import AGGREGATES, MESSAGES_BY_CHANNEL_ACTION, collect, messages_by_channel_action
from chalicelib.retention.contact_policy import PENDING, why_not
from chalicelib.retention.messages import build_message, compose, validate_message
from chalicelib.retention.outcomes import HOLDOUT, TREATED, exposure_from_item
from chalicelib.runs.context import RunContext
from chalicelib.runs.merge import MAX_WRITE_ROUNDS, StateMerger
from chalicelib.runs.ports import CONFLICT, FAILED, RiskWrite
from chalicelib.runs.records import Run, bump
from chalicelib.scoring.scorer import Scores, iso_time
from chalicelib.scoring.state import StateBatch, col

MESSAGE_TIERS = ("high", "medium")
# The message claim on a risk item: carried over when a score replaces the item without a new message.
CONTACT_ATTRS = ("contact_message_id", "contact_status", "contact_run_id", "contact_claimed_at", "contact_as_of")
# The user's latest exposure (message sent, or withheld as holdout) and when they came back after it.
EXPOSURE_ATTRS = ("exposed_at", "exposure_group", "exposure_tier", "exposure_action", "returned_at")
# Messages claimed in a chunk, by destination: (user, body) each.
Claimed = dict[str, list[tuple[str, dict[str, Any]]]]
# What a risk item says about its writing, not about the user: which run wrote it and when, the ids claimed at
# its own as_of, the adapter's version and expiry. A re-score that would change only these is not written, and
# the stored item stands with its older as_of (its contact_ids belong to that as_of, so they stand with it).
BOOKKEEPING_ATTRS = frozenset(
    {"as_of", "scored_at", "run_id", "source", "contact_ids", "risk_version", "expires_at", "churn_probability"}
)
# A stored probability stands until a re-score moves it by this much; compared with the stored value, so small
# daily moves add up to a write rather than drifting away unseen.
PROBABILITY_STEP = 0.01
# The outcome of a risk item not written because the stored one already says everything it would.
UNCHANGED = "unchanged"


@dataclass
class Decision:
    """What a chunk decided for one scored user: the risk item to write and the message, if any, to send."""

    index: int
    item: dict[str, Any]
    body: dict[str, Any] | None = None
    held: str | None = None  # why an actionable user gets no message
    replaced: dict[str, Any] | None = None  # the exposure a new one replaces
    # An earlier attempt of this very run claimed the message (before a crash): it took its share of the cap.
    claimed_earlier: bool = False


class ChunkWorker:
    """Merges, scores and delivers one chunk of users at a time."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.merger = StateMerger(ctx)

    # ---- merge -------------------------------------------------------------------------------------
    def merge_score_deliver(
        self, run: Run, users: list[str], rows: np.ndarray, snapshot: bool, as_of: dict[str, float]
    ) -> None:
        """Merge the users' deltas into their state, then score and deliver those still within retention."""
        retries_before = self._retries()
        batch, versions = self.merger.merge(run, users, rows, snapshot, as_of)
        # A file may bring users whose latest event is older than the retention (a backfill of years): their
        # state is kept for TTL to delete, but they are forgotten as the schedule forgets them, not contacted.
        last_seen = batch.values[:, col("last_seen")]
        live = [
            uid
            for uid, seen in zip(batch.user_ids, last_seen, strict=True)
            if self.ctx.tables.expiry(seen) >= as_of[uid]
        ]
        if len(live) < len(batch):
            run.add({"expired_skipped": len(batch) - len(live)})
            batch = batch.subset(live)
        self.score_deliver(run, batch, versions, {uid: as_of[uid] for uid in batch.user_ids}, retries_before)

    # ---- score and deliver ---------------------------------------------------------------------------
    def score_deliver(
        self,
        run: Run,
        batch: StateBatch,
        versions: dict[str, int],
        targets: dict[str, float],
        retries_before: Counter[str] | None = None,
    ) -> None:
        """Score users, write each score unless a newer one is stored, then send and confirm their messages."""
        retries_before = self._retries() if retries_before is None else retries_before
        claimed: Claimed = {dest: [] for dest in self.ctx.queues.queue_names}
        delays = self.ctx.backoff.delays()
        for _ in range(MAX_WRITE_ROUNDS):
            if not len(batch):
                break
            again: dict[str, float] = {}
            for as_of, idx in _by_target(batch.user_ids, targets).items():
                part = StateBatch([batch.user_ids[i] for i in idx], batch.values[idx])
                self.score_part(run, part, versions, as_of, claimed, again)
            if not again:
                break
            # Read the users' freshest state and score them again, as of the newest time seen.
            self.ctx.backoff.wait(next(delays, 0.0))
            stored = self.ctx.tables.get_states(list(again))
            for uid in stored.unread:
                run.count("reads_failed")
                run.dead.add_user(uid, again[uid])
            run.locales.update({uid: loc[1] for uid, loc in stored.locales.items()})
            batch, targets = stored.batch, {uid: again[uid] for uid in stored.batch.user_ids}
            versions = {**versions, **stored.versions}
        else:
            for uid in batch.user_ids:
                run.dead.add_user(uid, targets[uid])
        for tier, entries in claimed.items():
            self.send(run, tier, entries)
        self._log_retries(run, retries_before)

    def score_part(
        self,
        run: Run,
        part: StateBatch,
        versions: dict[str, int],
        as_of: float,
        claimed: Claimed,
        again: dict[str, float],
    ) -> None:
        """Score users as of one time and write each score unless the stored one is newer; fill `again`."""
        scores = self.ctx.scorer.score(part, as_of)
        stored = self.ctx.tables.get_risks(part.user_ids)
        unread = set(stored.unread)
        for uid in stored.unread:  # its stored score and claim are unknown: re-scored by replay instead
            run.count("reads_failed")
            run.dead.add_user(uid, as_of)
        scored_at = iso_time(self.ctx.clock())
        decisions: dict[str, Decision] = {}
        writes: list[RiskWrite] = []
        skipped: list[str] = []
        claimed_here = 0
        for i, row in enumerate(scores.rows()):
            uid = scores.user_ids[i]
            old, basis = stored.get(uid, {}), versions.get(uid, 0)
            if uid in unread or not self._is_newest(run, old, scores.as_of, basis, as_of, again, uid):
                continue
            item = self._risk_item(run, row, old, basis, scored_at)
            decision = self._decide(run, scores, i, old, item, claimed_here)
            claimed_here += decision.body is not None or decision.claimed_earlier
            decisions[uid] = decision
            last_event = float(part.values[i, col("last_seen")])
            if decision.body is None and unchanged(old, item, basis, self.ctx.tables.expiry(last_event)):
                skipped.append(uid)
                continue
            writes.append(RiskWrite(item, int(old.get("risk_version", 0)), last_event))
        replaced = [d.replaced for d in decisions.values() if d.replaced is not None]
        if replaced:
            # Kept before the writes that replace them: a crash in between leaves an exposure both closed and
            # still open, which the lift report counts once, never one that is nowhere.
            self.ctx.bucket.closed_put(run.run_id, replaced)
        outcomes = {**self.ctx.tables.put_risks(writes), **dict.fromkeys(skipped, UNCHANGED)}
        self._tally(run, scores, decisions, outcomes, as_of, claimed, again)

    @staticmethod
    def _is_newest(
        run: Run, old: dict[str, Any], new_as_of: str, basis: int, as_of: float, again: dict[str, float], uid: str
    ) -> bool:
        """Return True when a new score may replace the stored one: at least as new in time and in state.

        A stored score that knows everything this one does is kept (skipped_as_older); one newer in time but
        older in state is scored again from the newer state at the newer time (rescored_at_newer_as_of).
        """
        old_as_of, old_basis = old.get("as_of"), int(old.get("scored_state_version", 0))
        if old_as_of is not None and run.rescored_through is not None:
            # A re-score of everyone that began at `rescored_through` left unwritten the items it would not change:
            # each stored item stands for that time too, so a late score older than it is scored again, not written.
            old_as_of = max(old_as_of, iso_time(run.rescored_through))
        if old_as_of is None or (old_as_of <= new_as_of and old_basis <= basis):
            return True
        if old_as_of >= new_as_of and old_basis >= basis:
            run.count("skipped_as_older")
        else:
            run.count("rescored_at_newer_as_of")
            again[uid] = max(as_of, parse_timestamp(old_as_of))
        return False

    def _risk_item(
        self, run: Run, row: dict[str, Any], old: dict[str, Any], basis: int, scored_at: str
    ) -> dict[str, Any]:
        """Return the new risk item of a user: the score, with the stored claim and exposure carried over."""
        item = risk_item(row, run_id=run.run_id, scored_at=scored_at, source=run.source)
        item["scored_state_version"] = basis
        item["playbook_version"] = self.ctx.scorer.playbook.version
        item.update({k: old[k] for k in (*CONTACT_ATTRS, *EXPOSURE_ATTRS) if k in old})
        returned = _returned(run, old)
        if returned is not None:
            item["returned_at"] = returned
        return item

    def _decide(
        self, run: Run, scores: Scores, i: int, old: dict[str, Any], item: dict[str, Any], claimed_here: int
    ) -> Decision:
        """Return whether user `i` gets a message now, with the claim, exposure and tags put on their item."""
        # Message ids embed as_of, and a stored as_of never moves back: ids of older times cannot recur.
        claimed_now = list(old.get("contact_ids", [])) if old.get("as_of") == scores.as_of else []
        segment = _segment(scores, i)
        decision = Decision(index=i, item=item)
        body = self._message(run, scores, i, segment)
        if body is not None:
            # A run spread over many workers takes each message from its shared counter instead (message_cap.py).
            so_far = run.claimed_before + run.messages_claimed + claimed_here if run.budget is None else 0
            decision.held = why_not(self.ctx.scorer.playbook, run.run_id, run.opt_outs, old, claimed_now, body, so_far)
            if decision.held is None and run.budget is not None and not run.budget.allows(old, body):
                decision.held = "run_cap"
            if decision.held == "opted_out":
                item["action"] = ""
            # A redo after a crash finds its run's own sent claim: it counts against the cap as it did then (a run
            # spread over many workers counts in its shared counter instead, grants and all).
            decision.claimed_earlier = (
                run.budget is None and decision.held == "duplicate" and old.get("contact_run_id") == run.run_id
            )
            decision.body = body if decision.held is None else None
        if decision.body is not None:
            claimed_now = _claim(item, decision.body["message_id"], run.run_id, scores.as_of, claimed_now)
        item["contact_ids"] = claimed_now
        # A redo of the same exposure finds it in its cooldown: it is still the holdout it was.
        same_exposure = old.get("exposed_at") == scores.as_of
        held_out = decision.held == "holdout" or (same_exposure and old.get("exposure_group") == HOLDOUT)
        decision.replaced = _expose(item, old, scores, i, decision, held_out)
        # Membership of the control group of the user's current exposure, whatever holds their message now.
        item["holdout"] = item.get("exposure_group") == HOLDOUT
        _tag(item, scores, i, segment)
        return decision

    def _message(self, run: Run, scores: Scores, i: int, segment: dict[str, str] | None) -> dict[str, Any] | None:
        """Return the retention message of user `i`, or None when their tier or action calls for none."""
        action = scores.actions[i]
        if scores.risk_tier[i] not in MESSAGE_TIERS or action is None:
            return None
        playbook = self.ctx.scorer.playbook
        uid = scores.user_ids[i]
        written = compose(
            playbook,
            action,
            user_id=uid,
            locale=run.locales.get(uid),
            risk_tier=scores.risk_tier[i],
            value_tier=scores.value_tier[i],
            segment=segment and segment["rfm"],
            as_of=scores.as_of,
        )
        body = build_message(
            user_id=uid,
            risk_tier=scores.risk_tier[i],
            value_tier=scores.value_tier[i],
            churn_probability=float(scores.probability[i]),
            reasons=scores.reasons[i],
            action=action,
            model_version=scores.model_version,
            as_of=scores.as_of,
            run_id=run.run_id,
            source=run.source,
            playbook_version=playbook.version,
            segment=segment,
            **written,
        )
        validate_message(body)
        return body

    def _tally(
        self,
        run: Run,
        scores: Scores,
        decisions: dict[str, Decision],
        outcomes: dict[str, str],
        as_of: float,
        claimed: Claimed,
        again: dict[str, float],
    ) -> None:
        """Count what was written, queue the messages of written items, and retry or dead-letter the rest."""
        counts: dict[str, Any] = {"users_scored": 0, "risk_tier": {}, "value_tier": {}, "risk_x_value": {}}
        counts.update(actions={}, suppressed={}, risk_writes_skipped=0)
        if scores.promotion is not None:
            counts["promotion"] = {"name": scores.promotion, "users_discounted": 0}
        for uid, outcome in outcomes.items():
            if outcome == CONFLICT:  # another run wrote this user's risk since we read it: decide again
                run.count("write_conflicts")
                again[uid] = as_of
            elif outcome == FAILED:
                run.dead.add_user(uid, as_of)
            else:  # written, or unchanged: the user is scored and counted alike either way
                counts["risk_writes_skipped"] += outcome == UNCHANGED
                self._count_written(run, scores, decisions[uid], counts, claimed)
        self._aggregate(scores, decisions, outcomes, counts)
        run.add(counts)

    def _aggregate(
        self, scores: Scores, decisions: dict[str, Decision], outcomes: dict[str, str], counts: dict[str, Any]
    ) -> None:
        """Add the run report's counts of the users written or unchanged to `counts` (reporting/aggregates.py)."""
        kept = [decisions[uid] for uid, outcome in outcomes.items() if outcome not in (CONFLICT, FAILED)]
        training = self.ctx.scorer.model.manifest.get("training_distribution")
        counts[AGGREGATES] = collect(scores, [d.index for d in kept], training)
        messages = [(d.body["action"]["channel"], scores.actions[d.index].code) for d in kept if d.body is not None]
        counts[MESSAGES_BY_CHANNEL_ACTION] = messages_by_channel_action(messages)

    def _count_written(
        self, run: Run, scores: Scores, decision: Decision, counts: dict[str, Any], claimed: Claimed
    ) -> None:
        """Count one written risk item and queue its message for its destination."""
        i = decision.index
        risk, value, action = scores.risk_tier[i], scores.value_tier[i], scores.actions[i]
        bump(counts, "users_scored")
        bump(counts["risk_tier"], risk)
        bump(counts["value_tier"], value)
        bump(counts["risk_x_value"], f"{risk}/{value}")
        if scores.discounted is not None and scores.discounted[i]:
            bump(counts["promotion"], "users_discounted")
        if action is not None:
            bump(counts["actions"], action.code)
        elif risk in MESSAGE_TIERS:
            bump(counts["suppressed"], "opted_out" if scores.opted_out[i] else "no_action")
        if decision.held is not None:
            bump(counts["suppressed"], decision.held)
            if decision.held == "duplicate":
                run.count("duplicates_suppressed", "messages")
        if decision.body is not None:
            # Account-manager tasks go to their own queue when one is configured; the rest to the tier's.
            manager = decision.body["action"]["channel"] == "account_manager" and "account_manager" in claimed
            claimed["account_manager" if manager else risk].append((decision.item["user_id"], decision.body))
            bump(counts, "messages_claimed")
        elif decision.claimed_earlier:
            bump(counts, "messages_claimed")  # claimed by this run's attempt before a crash, and counted as then

    # ---- send ------------------------------------------------------------------------------------------
    def send(self, run: Run, tier: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Send claimed messages to a destination's queue a batch at a time, marking each batch sent at once."""
        run.add({"messages_sent": {tier: 0}})
        size = self.ctx.queues.batch_size
        for start in range(0, len(entries), size):
            batch = entries[start : start + size]
            sent = self.ctx.queues.send(tier, [body for _, body in batch])
            run.add({"messages_sent": {tier: sent.accepted}})
            lost = {body["message_id"] for body in sent.failed} | {body["message_id"] for body, _ in sent.refused}
            channels = Counter(body["action"]["channel"] for _, body in batch if body["message_id"] not in lost)
            run.add({"messages_by_channel": dict(channels)})
            run.dead.messages += [{"tier": tier, "body": body} for body in sent.failed]
            for body, why in sent.refused:
                self._refused(run, {"tier": tier, "body": body, "refused": why})
            # Marked right after each batch: a crash in between resends at most this batch, same message ids.
            delivered = [(uid, body["message_id"]) for uid, body in batch if body["message_id"] not in lost]
            confirmed = self.ctx.tables.confirm_sent(delivered)
            if confirmed < len(delivered):
                run.count("claims_unconfirmed", n=len(delivered) - confirmed)

    def resend(self, run: Run, messages: list[dict[str, Any]]) -> None:
        """Resend dead-lettered messages whose claim is still pending; drop the ones superseded or sent."""
        by_tier: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for entry in messages:
            if "refused" in entry:  # SQS would refuse the same body again: it stays for an operator
                self._refused(run, entry)
                continue
            body = entry["body"]
            stored = self.ctx.tables.get_risks([body["user_id"]])
            if stored.unread:  # whether it is still due is unknown: it stays dead-lettered
                run.count("reads_failed")
                run.dead.messages.append(entry)
                continue
            contact = stored.get(body["user_id"], {})
            if contact.get("contact_message_id") == body["message_id"] and contact.get("contact_status") == PENDING:
                by_tier.setdefault(entry["tier"], []).append((body["user_id"], body))
            else:
                run.count("superseded_messages")
        for tier, entries in by_tier.items():
            self.send(run, tier, entries)

    def _refused(self, run: Run, entry: dict[str, Any]) -> None:
        """Dead-letter a message SQS refused for what it holds, with its reason; it is never resent as it is."""
        run.dead.messages.append(entry)
        run.count("messages_refused")
        message_id = entry["body"]["message_id"]
        self.ctx.logger.warning(
            "message refused", extra={"run_id": run.run_id, "message_id": message_id, "reason": entry["refused"]}
        )

    # ---- retries ---------------------------------------------------------------------------------------
    def _retries(self) -> Counter[str]:
        return self.ctx.tables.retries + self.ctx.queues.retries

    def _log_retries(self, run: Run, before: Counter[str]) -> None:
        """Add the retries since `before` to the run, with one log line for the burst."""
        burst = self._retries() - before
        if not burst:
            return
        for op, n in burst.items():
            run.count("retries", op, n=n)
        self.ctx.logger.warning("retries", extra={"run_id": run.run_id, "retries": dict(burst)})


def risk_item(row: dict[str, Any], *, run_id: str, scored_at: str, source: str) -> dict[str, Any]:
    """Return the stored attributes of one user's current risk (the contract's score attributes and the run's)."""
    item = dict(row)
    item["reasons"] = list(row["reasons"])
    item.update(run_id=run_id, scored_at=scored_at, source=source)
    # The tier index's key (lookup/tier_index.py): derived from the tiers, so it changes only when they do.
    item[KEY_ATTRIBUTE] = tier_key(row["risk_tier"], row["value_tier"], row["user_id"])
    return item


def unchanged(old: dict[str, Any], item: dict[str, Any], basis: int, expires_at: int) -> bool:
    """Return True when the stored risk item already tells its readers everything the new one would.

    Only a re-score of the very state the stored item was scored from qualifies (new events always write: the
    state version orders runs), and only while the stored expiry is the one the write would set. Every other
    attribute but the bookkeeping must be equal, and the probability within PROBABILITY_STEP.
    """
    if not old or int(old.get("scored_state_version", -1)) != basis or not _same(old.get("expires_at"), expires_at):
        return False
    if "churn_probability" not in old:
        return False
    if abs(float(item["churn_probability"]) - float(old["churn_probability"])) >= PROBABILITY_STEP:
        return False
    return all(_same(old.get(k), item.get(k)) for k in (old.keys() | item.keys()) - BOOKKEEPING_ATTRS)


def _same(a: Any, b: Any) -> bool:
    """Return True when two attribute values are equal as stored (a Decimal read back equals the float written)."""
    numbers = (int, float, Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _claim(item: dict[str, Any], message_id: str, run_id: str, as_of: str, claimed_now: list[str]) -> list[str]:
    """Put this run's pending claim of a message on the item; return the ids claimed at its as_of."""
    item.update(
        contact_message_id=message_id,
        contact_status=PENDING,
        contact_run_id=run_id,
        contact_claimed_at=item["scored_at"],
        contact_as_of=as_of,
    )
    return list(dict.fromkeys([*claimed_now, message_id]))


def _expose(
    item: dict[str, Any], old: dict[str, Any], scores: Scores, i: int, decision: Decision, held_out: bool
) -> dict[str, Any] | None:
    """Start a new exposure when the user is messaged or withheld as holdout; return the one it replaces."""
    group = HOLDOUT if held_out else (TREATED if decision.body is not None else None)
    if group is None or old.get("exposed_at") == scores.as_of:
        return None
    replaced = exposure_from_item(item) if "exposed_at" in item else None
    item.pop("returned_at", None)
    item.update(
        exposed_at=scores.as_of,
        exposure_group=group,
        exposure_tier=scores.risk_tier[i],
        exposure_action=scores.actions[i].code,
    )
    return replaced


def _tag(item: dict[str, Any], scores: Scores, i: int, segment: dict[str, str] | None) -> None:
    """Name the promotion that set the user's tier, and their RFM segment and activity cluster."""
    if scores.discounted is not None and scores.discounted[i]:
        item["promotion"] = scores.promotion
    if segment is not None:
        item["rfm_segment"], item["activity_cluster"] = segment["rfm"], segment["activity"]


def _returned(run: Run, old: dict[str, Any]) -> str | None:
    """Return when the user first came back after their exposure, counting this file's events too."""
    if run.events is None or "exposed_at" not in old:
        return old.get("returned_at")
    first = run.events.first_after(old["user_id"], parse_timestamp(old["exposed_at"]))
    if first is None:
        return old.get("returned_at")
    seen = iso_time(first)
    return min(seen, old["returned_at"]) if old.get("returned_at") else seen


def _segment(scores: Scores, i: int) -> dict[str, str] | None:
    if scores.segment is None or scores.activity is None:
        return None
    return {"rfm": str(scores.segment[i]), "activity": str(scores.activity[i])}


def _by_target(user_ids: list[str], targets: dict[str, float]) -> dict[float, list[int]]:
    out: dict[float, list[int]] = {}
    for i, uid in enumerate(user_ids):
        out.setdefault(targets[uid], []).append(i)
    return out
