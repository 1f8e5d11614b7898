"""Retention messages: the body a downstream consumer receives, validated against the schema."""

from __future__ import annotations

import uuid
from typing import Any

from chalicelib.errors import InvalidMessageError
from chalicelib.retention.json_schemas import validator
from chalicelib.retention.playbook import Action

SCHEMA_VERSION = "1.0"
SCHEMA_FILE = "retention-message.schema.json"
# Stable namespace so message ids are the same on every machine and every retry.
_NAMESPACE = uuid.UUID("6f1c3b1e-8d0a-4f3e-9a51-2d6c3c1f7b10")


def message_id(user_id: str, as_of: str, action_code: str) -> str:
    """Return the id that is the same for the same user, as_of and action."""
    return str(uuid.uuid5(_NAMESPACE, f"{user_id}\x1f{as_of}\x1f{action_code}"))


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
    content: dict[str, str] | None = None,
    segment: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the retention message body for one user (`content`: the rendered text and its locale)."""
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
    }
    if content is not None:
        body["content"] = content
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
