"""Turn behaviour state into scores: probability, risk and value tiers, reasons and an action."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from typing import IO, Any

import numpy as np

from chalicelib.retention.playbook import Action, Playbook, load_playbook
from chalicelib.scoring.artifact import ChurnModel
from chalicelib.scoring.events import EVENT_TYPES, EventBatch
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.reasons import reason_effects, top_reasons
from chalicelib.scoring.segments import activity_clusters, rfm_segments
from chalicelib.scoring.state import StateBatch
from chalicelib.scoring.tiers import risk_tiers, value_tiers

SCORE_COLUMNS: tuple[str, ...] = (
    "user_id",
    "as_of",
    "churn_probability",
    "risk_tier",
    "value_tier",
    "reasons",
    "action",
    "model_version",
)
_UNSUBSCRIBED = FEATURE_NAMES.index("unsubscribed")


def iso_time(epoch_seconds: float) -> str:
    """Return an epoch time as ISO 8601 UTC with a Z suffix, to the second."""
    return datetime.fromtimestamp(round(epoch_seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Scores:
    """Scores of several users as of one time, aligned with `user_ids`."""

    user_ids: list[str]
    as_of: str
    probability: np.ndarray
    risk_tier: np.ndarray
    value_tier: np.ndarray
    reasons: list[list[str]]
    actions: list[Action | None]
    opted_out: np.ndarray  # bool: the user unsubscribed, so no message whatever the action
    model_version: str
    promotion: str | None = None  # the promotion period in force at as_of
    discounted: np.ndarray | None = None  # bool: the user's tier was set by the promotion's discount
    segment: np.ndarray | None = None  # RFM segment names (None: the artifact predates segments)
    activity: np.ndarray | None = None  # activity cluster: high / medium / low
    features: np.ndarray | None = None  # the model's inputs, one row per user (the run report's drift bins)

    def __len__(self) -> int:
        return len(self.user_ids)

    def rows(self) -> Iterator[dict[str, object]]:
        """Yield one record per user with the contract's score attributes."""
        for i, user_id in enumerate(self.user_ids):
            action = self.actions[i]
            yield {
                "user_id": user_id,
                "as_of": self.as_of,
                "churn_probability": round(float(self.probability[i]), 6),
                "risk_tier": self.risk_tier[i],
                "value_tier": self.value_tier[i],
                "reasons": self.reasons[i],
                "action": action.code if action else "",
                "model_version": self.model_version,
            }

    def counts(self) -> dict[str, dict[str, int]]:
        """Return users per risk tier, per value tier and per risk x value cell."""
        out: dict[str, dict[str, int]] = {"risk_tier": {}, "value_tier": {}, "risk_x_value": {}}
        for risk, value in zip(self.risk_tier, self.value_tier):
            out["risk_tier"][risk] = out["risk_tier"].get(risk, 0) + 1
            out["value_tier"][value] = out["value_tier"].get(value, 0) + 1
            cell = f"{risk}/{value}"
            out["risk_x_value"][cell] = out["risk_x_value"].get(cell, 0) + 1
        return out


class Scorer:
    """Scores behaviour state with an injected model (tests pass one with a fixed predict_proba) and playbook."""

    def __init__(self, model: ChurnModel, playbook: Playbook | None = None) -> None:
        self.model = model
        self.playbook = playbook or load_playbook()

    def score(self, state: StateBatch, as_of: float) -> Scores:
        """Return the scores of every user in `state` as of epoch time `as_of`."""
        features = compute_features(state.values, as_of)
        probability = self.model.predict_proba(features)
        risk = risk_tiers(probability, self.model.risk_thresholds)
        value = value_tiers(features, self.model.value_thresholds)
        reasons: list[list[str]] = [[] for _ in range(len(state))]
        # Reasons are computed for users the playbook may act on; low-risk users need none.
        at_risk = np.flatnonzero(risk != "low")
        if at_risk.size:
            risky = features[at_risk]
            effects = reason_effects(risky, probability[at_risk], self.model.reference, self.model.what_if(risky))
            for i, codes in zip(at_risk, top_reasons(effects)):
                reasons[i] = codes
        promotion = self.playbook.promotion_at(as_of)
        discounted = np.zeros(len(state), dtype=bool)
        if promotion is not None and at_risk.size:
            # During a promotion short silence is normal: risk driven by the listed reasons counts for less.
            top = np.array([r[0] if r else "" for r in reasons])
            discounted = np.isin(top, promotion.reasons) & (risk != "low")
            if discounted.any():
                risk = risk.copy()
                scaled = probability[discounted] * (1.0 - promotion.risk_discount)
                risk[discounted] = risk_tiers(scaled, self.model.risk_thresholds)
        opted_out = features[:, _UNSUBSCRIBED] > 0
        choose = self.playbook.choose
        actions = [None if opted_out[i] else choose(risk[i], value[i], reasons[i]) for i in range(len(state))]
        return Scores(
            user_ids=list(state.user_ids),
            as_of=iso_time(as_of),
            probability=probability,
            risk_tier=risk,
            value_tier=value,
            reasons=reasons,
            actions=actions,
            opted_out=opted_out,
            model_version=self.model.model_version,
            promotion=promotion.name if promotion is not None else None,
            discounted=discounted,
            features=features,
            **self._segments(features),
        )

    def _segments(self, features: np.ndarray) -> dict[str, np.ndarray]:
        spec = self.model.manifest.get("segments")
        if spec is None:
            return {}
        return {"segment": rfm_segments(features, spec), "activity": activity_clusters(features, spec)}


# An event type that made up at least this share of the training log is a signal the model relies on.
MAJOR_SIGNAL_SHARE = 0.05


def missing_signals(manifest: dict[str, Any], events: EventBatch) -> list[str]:
    """Return the event types the model was trained on (each a major share) that a whole history lacks."""
    shares = manifest.get("training_data", {}).get("event_type_shares", {})
    present = {EVENT_TYPES[c] for c in np.unique(events.type_code)}
    return [t for t, share in shares.items() if share >= MAJOR_SIGNAL_SHARE and t not in present]


def write_scores_csv(scores: Scores, out: IO[str], header: bool = True) -> int:
    """Write the contract's score CSV (reasons `;`-joined), its header unless `header` is False; return rows written."""
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(SCORE_COLUMNS)
    writer.writerows(
        zip(
            scores.user_ids,
            repeat(scores.as_of),
            np.round(scores.probability, 6).tolist(),
            scores.risk_tier.tolist(),
            scores.value_tier.tolist(),
            (";".join(r) for r in scores.reasons),
            (a.code if a else "" for a in scores.actions),
            repeat(scores.model_version),
        )
    )
    return len(scores)
