"""Whether an actionable user gets their message now: opt-outs, claims already made, cooldown, holdout, cap."""

from __future__ import annotations

from typing import Any

from chalicelib.ingest import parse_timestamp
from chalicelib.retention.playbook import Playbook

# The status of the message claim on a risk item: claimed by a run, then marked once SQS took it.
PENDING, SENT = "pending", "sent"


def parse_opt_outs(data: bytes | None) -> frozenset[str]:
    """Return the user ids of an opt-out list: one id per line, an optional `user_id` header, ids quoted or not.

    Only LF or CRLF ends a line (an id may hold U+2028 or U+0085, which `splitlines` would split on), a UTF-8
    byte-order mark is dropped, and each id is stripped as the reader strips the ids it stores, so a listed
    user is matched exactly as their events name them.
    """
    if data is None:
        return frozenset()
    text = data.decode("utf-8-sig", errors="replace")
    ids = (_opt_out_id(line.removesuffix("\r")) for line in text.split("\n"))
    return frozenset(uid for uid in ids if uid and uid != "user_id")


def _opt_out_id(line: str) -> str:
    """Return the id of one opt-out line: stripped, and unquoted when written as a quoted CSV field."""
    field = line.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        field = field[1:-1].replace('""', '"').strip()
    return field


def why_not(
    playbook: Playbook,
    run_id: str,
    opt_outs: frozenset[str],
    old: dict[str, Any],
    claimed_now: list[str],
    body: dict[str, Any],
    claimed_so_far: int,
) -> str | None:
    """Return why an actionable user gets no message now (None: send it), by the contact policy.

    Decided on the risk item that the claim is written to, under its version, so two runs at once
    cannot both contact a user. `claimed_so_far` counts the messages this run has claimed before this one.
    """
    uid, mid, tier = body["user_id"], body["message_id"], body["risk_tier"]
    if uid in opt_outs:
        return "opted_out"
    if old.get("contact_message_id") == mid:
        # Claimed before: this run's own pending claim is a redo after a crash (same id); else sent.
        own = old.get("contact_status") == PENDING and old.get("contact_run_id") == run_id
        return None if own else "duplicate"
    if mid in claimed_now:
        return "duplicate"
    policy = playbook.contact_policy
    # The holdout keeps the same cadence as the treated: a withheld message starts a cooldown too.
    last = old.get("exposed_at") or old.get("contact_as_of")
    if last and parse_timestamp(body["as_of"]) - parse_timestamp(last) < policy.cooldown_seconds(tier):
        return "cooldown"
    if playbook.in_holdout(uid, tier):
        return "holdout"
    if claimed_so_far >= policy.max_messages_per_run:
        return "run_cap"
    return None
