"""Default retention playbook: risk tier x value tier x top reason decides the action."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# What each reason calls for: (action type, offer). The design source's rules: a coupon or rebate
# for price sensitivity, a tutorial for feature difficulty, a service callback for complaints,
# new-content news for content exhaustion, an exclusive invitation for long silence.
_BY_REASON: dict[str, tuple[str, str]] = {
    "inactivity": ("win_back", "exclusive_invitation"),
    "engagement_drop": ("re_engage", "new_content_digest"),
    "spend_drop": ("rebate", "loyalty_points_boost"),
    "complaints": ("service_callback", "priority_service_callback"),
    "price_sensitivity": ("coupon", "coupon_10pct"),
    "feature_difficulty": ("tutorial", "guided_tutorial"),
    "new_user": ("onboarding", "onboarding_tips"),
}
_DEFAULT_REASON = "inactivity"
_PRIORITY = {("high", "high"): 1, ("high", "medium"): 2, ("medium", "high"): 2, ("high", "low"): 3}


@dataclass(frozen=True)
class Action:
    """A retention action: what to do, through which channel, with which offer."""

    code: str
    type: str
    channel: str
    offer: str
    priority: int

    def to_message(self) -> dict[str, object]:
        """Return the action object of a retention message."""
        out = asdict(self)
        out.pop("code")
        return out


def choose_action(risk_tier: str, value_tier: str, reasons: list[str]) -> Action | None:
    """Return the action for a user, or None when their risk does not call for one."""
    if risk_tier == "low":
        return None
    reason = _DEFAULT_REASON
    for code in reasons:
        if code in _BY_REASON:
            reason = code
            break
    action_type, offer = _BY_REASON[reason]
    priority = _PRIORITY.get((risk_tier, value_tier), 4)
    if risk_tier == "high" and value_tier == "high":
        # High-value users at high risk get a person, one to one, whatever the reason.
        return Action("account_manager_task", "account_manager_task", "account_manager", offer, priority)
    if action_type == "service_callback":
        channel = "sms"
    elif value_tier == "low":
        # Low-value users are handled by automated batch pushes to keep the cost down.
        channel = "push"
    else:
        channel = "email"
    return Action(f"{action_type}_{channel}", action_type, channel, offer, priority)
