"""The contact policy decides, per actionable user, whether their message goes out now and why not."""

from __future__ import annotations

import pytest

from chalicelib.retention.contact_policy import PENDING, SENT, parse_opt_outs, why_not
from chalicelib.retention.playbook import Playbook, load_playbook

PLAYBOOK = load_playbook()
AS_OF = "2026-06-10T00:00:00Z"


def body(user_id: str = "u1", message_id: str = "m1", tier: str = "high", as_of: str = AS_OF) -> dict:
    return {"user_id": user_id, "message_id": message_id, "risk_tier": tier, "as_of": as_of}


def treated_user(tier: str = "high") -> str:
    """Return a user id outside the holdout of `tier`."""
    return next(f"u{i}" for i in range(1000) if not PLAYBOOK.in_holdout(f"u{i}", tier))


def decide(old: dict | None = None, claimed_now=(), msg: dict | None = None, opt_outs=(), so_far: int = 0, **kw):
    uid = treated_user()
    return why_not(
        kw.get("playbook", PLAYBOOK),
        "run-1",
        frozenset(opt_outs),
        old or {},
        list(claimed_now),
        msg or body(uid),
        so_far,
    )


def test_a_new_actionable_user_outside_the_holdout_is_contacted():
    assert decide() is None


def test_an_opted_out_user_is_never_contacted_whatever_else_holds():
    uid = treated_user()
    assert decide(msg=body(uid), opt_outs={uid}) == "opted_out"


def test_this_runs_own_pending_claim_is_a_redo_and_sent_again():
    old = {"contact_message_id": "m1", "contact_status": PENDING, "contact_run_id": "run-1"}
    assert decide(old, msg=body(treated_user(), "m1")) is None


@pytest.mark.parametrize(
    "old",
    [
        {"contact_message_id": "m1", "contact_status": SENT, "contact_run_id": "run-1"},
        {"contact_message_id": "m1", "contact_status": PENDING, "contact_run_id": "another-run"},
    ],
)
def test_a_message_sent_or_claimed_by_another_run_is_a_duplicate(old):
    assert decide(old, msg=body(treated_user(), "m1")) == "duplicate"


def test_a_message_id_already_claimed_at_this_as_of_is_a_duplicate():
    assert decide(claimed_now=["m1"], msg=body(treated_user(), "m1")) == "duplicate"


def test_a_recent_exposure_or_contact_holds_the_next_message_for_the_tiers_cooldown():
    cooldown_days = PLAYBOOK.contact_policy.cooldown_seconds("high") / 86400
    assert cooldown_days >= 1
    recent = "2026-06-09T12:00:00Z"
    assert decide({"exposed_at": recent}) == "cooldown"
    assert decide({"contact_as_of": recent}) == "cooldown"
    long_ago = "2026-01-01T00:00:00Z"
    assert decide({"exposed_at": long_ago}) is None


def test_holdout_users_are_withheld():
    uid = next(f"u{i}" for i in range(1000) if PLAYBOOK.in_holdout(f"u{i}", "high"))
    assert decide(msg=body(uid)) == "holdout"


def test_the_run_cap_holds_messages_beyond_it():
    cap = PLAYBOOK.contact_policy.max_messages_per_run
    assert decide(so_far=cap - 1) is None
    assert decide(so_far=cap) == "run_cap"


def test_the_cap_comes_from_the_playbook():
    spec = PLAYBOOK.spec
    capped = Playbook.from_spec({**spec, "contact_policy": {**spec["contact_policy"], "max_messages_per_run": 1}}, "c")
    assert decide(so_far=1, playbook=capped) == "run_cap"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, set()),
        (b"", set()),
        (b"user_id\nu1\nu2\n", {"u1", "u2"}),
        (b'"u1"\r\n u2 \n\n', {"u1", "u2"}),
        ("\ufeffuser_id\r\nu1\r\n".encode(), {"u1"}),  # a byte-order mark is not part of the header
        ("a\u2028b\nc\x85d\n".encode(), {"a\u2028b", "c\x85d"}),  # only LF ends a line
        (b'"q""uote"\n"  padded  "\n', {'q"uote', "padded"}),  # a quoted CSV field, stripped as the reader does
        (b"old\rmac\n", {"old\rmac"}),  # a lone CR does not end a line
    ],
)
def test_an_opt_out_list_is_one_user_id_per_line_with_an_optional_header(data, expected):
    assert parse_opt_outs(data) == expected
