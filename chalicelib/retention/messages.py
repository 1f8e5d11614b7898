"""Retention messages: the body a downstream consumer receives, validated against the schema."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.errors import InvalidMessageError
from chalicelib.ingest import parse_timestamp
from chalicelib.retention.json_schemas import validator
from chalicelib.retention.playbook import Action, Playbook

# Consumers check the major part only: a minor version adds fields, and a body of 1.x still reads as 1.0 did.
# What bodies carry: every field added since 1.0 is one a 1.0 reader ignores, so they still say 1.0 and a consumer
# validating with the 1.0 schema (which pins "1.0") accepts them; the schema itself accepts any 1.x.
SCHEMA_VERSION = "1.0"
SCHEMA_FILE = "retention-message.schema.json"
# Stable namespace so message ids are the same on every machine and every retry.
_NAMESPACE = uuid.UUID("6f1c3b1e-8d0a-4f3e-9a51-2d6c3c1f7b10")


def message_id(user_id: str, as_of: str, action_code: str) -> str:
    """Return the id that is the same for the same user, as_of and action."""
    return str(uuid.uuid5(_NAMESPACE, f"{user_id}\x1f{as_of}\x1f{action_code}"))


def compose(
    playbook: Playbook,
    action: Action,
    *,
    user_id: str,
    locale: str | None,
    risk_tier: str,
    value_tier: str,
    segment: str | None,
    as_of: str,
) -> dict[str, Any]:
    """Return what the playbook says in a user's message: the text, its labels, the user's locale and the expiry.

    `locale` is the user's locale tag as their events named it (None when none did); the text is written in the
    language the playbook picks for it, and a brief for the team in the playbook's staff_locale.
    """
    language = playbook.language_for(locale, action.channel)
    text = playbook.render(action, language, user_id, risk_tier, value_tier, segment)
    cooldown = playbook.contact_policy.cooldown_seconds(risk_tier)
    out: dict[str, Any] = {
        "content": {"locale": language, "text": text},
        **playbook.labels(action, language),
        "expires_at": expiry(as_of, cooldown),
    }
    if locale is not None:
        out["user_locale"] = locale
    return out


def expiry(as_of: str, seconds: float) -> str:
    """Return `as_of` plus `seconds`, written as as_of is (ISO 8601 UTC, to the second, Z suffix)."""
    at = datetime.fromtimestamp(round(parse_timestamp(as_of)), tz=UTC) + timedelta(seconds=round(seconds))
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_message(
    *,
    user_id: str,
    risk_tier: str,
    value_tier: str,
    churn_probability: float,
    reasons: list[str],
    action: Action,
    model_version: str,
    as_of: str,
    run_id: str,
    source: str,
    playbook_version: str,
    content: dict[str, str],
    expires_at: str,
    reason_label: str,
    offer_label: str,
    user_locale: str | None = None,
    segment: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the retention message body for one user (`content`: the rendered text and its language).

    The playbook's part (`content`, the labels, `user_locale`, `expires_at`) is what `compose` returns.
    """
    body = {
        "schema_version": SCHEMA_VERSION,
        "message_id": message_id(user_id, as_of, action.code),
        "user_id": user_id,
        "risk_tier": risk_tier,
        "value_tier": value_tier,
        "churn_probability": round(float(churn_probability), 6),
        "reasons": list(reasons),
        "action": action.to_message(),
        "model_version": model_version,
        "as_of": as_of,
        "run_id": run_id,
        "source": source,
        "playbook_version": playbook_version,
        "content": content,
        "expires_at": expires_at,
        "reason_label": reason_label,
        "offer_label": offer_label,
    }
    if user_locale is not None:
        body["user_locale"] = user_locale
    if segment is not None:
        body["segment"] = segment
    return body


def validate_message(body: dict[str, Any]) -> None:
    """Raise InvalidMessageError if `body` breaks the retention-message schema."""
    # jsonschema's own error quotes the offending value (a user id, the message text) and would reach the
    # Lambda log in a traceback: name the message, the schema path and the keyword only, and chain nothing.
    error = next(iter(validator(SCHEMA_FILE).iter_errors(body)), None)
    if error is None:
        return
    mid = body.get("message_id")
    name = mid if isinstance(mid, str) and _is_uuid(mid) else "(no valid message_id)"
    path = "/".join(str(part) for part in error.schema_path) or "(root)"
    raise InvalidMessageError(f"retention message {name} breaks {SCHEMA_FILE} at {path} ({error.validator!r} failed)")


def _is_uuid(text: str) -> bool:
    """Return whether `text` is a UUID, so it can be named without quoting anything else."""
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
