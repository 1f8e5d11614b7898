"""Retention messages: the body a downstream consumer receives, validated against the schema."""

from __future__ import annotations

import json
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

from chalicelib.playbook import Action

SCHEMA_VERSION = "1.0"
SCHEMA_FILE = "retention-message.schema.json"
# Stable namespace so message ids are the same on every machine and every retry.
_NAMESPACE = uuid.UUID("6f1c3b1e-8d0a-4f3e-9a51-2d6c3c1f7b10")
_SCHEMA_DIRS = (
    Path(__file__).resolve().parent / "schemas",
    Path(__file__).resolve().parent.parent / "schemas",
)


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
) -> dict[str, Any]:
    """Return the retention message body for one user."""
    return {
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
    }


@lru_cache(maxsize=1)
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    for directory in _SCHEMA_DIRS:
        path = directory / SCHEMA_FILE
        if path.exists():
            schema = json.loads(path.read_text())
            Draft202012Validator.check_schema(schema)
            return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    raise FileNotFoundError(f"{SCHEMA_FILE} not found in {[str(d) for d in _SCHEMA_DIRS]}")


def validate_message(body: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `body` breaks the retention-message schema."""
    _validator().validate(body)
