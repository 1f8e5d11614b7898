"""What a risk item shows its readers (the API, the CRM export): the score, tiers, reasons, segment, last message,
exposure and holdout. Never the state, versions, claim bookkeeping or which run wrote it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# Shown as they are stored.
PLAIN = (
    "user_id",
    "as_of",
    "scored_at",
    "risk_tier",
    "value_tier",
    "action",
    "model_version",
    "rfm_segment",
    "activity_cluster",
    "promotion",
)
MESSAGE = {"contact_message_id": "message_id", "contact_status": "status", "contact_as_of": "as_of"}
EXPOSURE = {
    "exposure_group": "group",
    "exposed_at": "at",
    "exposure_tier": "tier",
    "exposure_action": "action",
    "returned_at": "returned_at",
}
EXPIRES = "expires_at"
# Every attribute a read asks DynamoDB for (the tier index projects exactly these): what is shown, and the expiry.
READ_ATTRIBUTES = (*PLAIN, "churn_probability", "reasons", "holdout", *MESSAGE, *EXPOSURE, EXPIRES)


def is_live(item: dict[str, Any], now: float) -> bool:
    """Return False for an item past its retention: TTL deletes it within days, and until then nobody reads it."""
    return EXPIRES not in item or float(item[EXPIRES]) >= now


def user_view(item: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON-ready view of one risk item."""
    view: dict[str, Any] = {k: item[k] for k in PLAIN if k in item}
    view["churn_probability"] = _number(item.get("churn_probability"))
    view["reasons"] = [str(r) for r in item.get("reasons", [])]
    view["holdout"] = bool(item.get("holdout", False))
    view["last_message"] = _part(item, MESSAGE)
    view["exposure"] = _part(item, EXPOSURE)
    return view


def _part(item: dict[str, Any], names: dict[str, str]) -> dict[str, Any] | None:
    """Return the attributes of one part (the last message, the exposure) renamed, or None when it has none."""
    part = {shown: item[stored] for stored, shown in names.items() if stored in item}
    return part or None


def _number(value: Any) -> float | None:
    """Return a stored number (DynamoDB gives Decimal) as a float."""
    if value is None:
        return None
    return float(value) if isinstance(value, (Decimal, int, float)) else None
