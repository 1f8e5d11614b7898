"""Drift: the population stability index of the score and of each model feature against the training data.

The manifest's `training_distribution` holds, for the score and each feature, the training deciles' interior cut
points (`edges`) and the share of training rows in each bin (`proportions`); a run counts its users in the same bins
(aggregates.py), only those seen within the distribution's `lookback_days`, the population it was measured on.
PSI = sum over bins of (a - e) * ln(a / e), with a the run's share and e the training share, each
floored at PSI_EPSILON first so an empty bin adds a large but finite term instead of infinity.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

# Shares below this count as this much: an empty bin on one side then adds about (e - 1e-4) * ln(e / 1e-4).
PSI_EPSILON = 1e-4
# The usual reading of PSI: below 0.1 no real change, 0.1 to 0.25 a change worth a look, above 0.25 a shift.
FLAG_AT = 0.1
ALARM_AT = 0.25
NO_DISTRIBUTION = "no training distribution in this model's manifest"
NO_USERS = "no users of the training population (seen within its lookback) to compare"
OK, FLAGGED, ALARM = "ok", "flagged", "alarm"


def psi(expected: list[float], counts: list[int], epsilon: float = PSI_EPSILON) -> float:
    """Return the PSI of observed bin `counts` against `expected` shares (same bins); 0.0 when nothing was seen."""
    if len(expected) != len(counts):
        raise ValueError(f"{len(counts)} observed bins against {len(expected)} expected")
    total = sum(counts)
    if total <= 0:
        return 0.0
    out = 0.0
    for e, n in zip(expected, counts, strict=True):
        a, e = max(n / total, epsilon), max(float(e), epsilon)
        out += (a - e) * math.log(a / e)
    return out


def status(value: float) -> str:
    """Return how a PSI reads: ok, flagged (at least FLAG_AT) or alarm (at least ALARM_AT)."""
    return ALARM if value >= ALARM_AT else FLAGGED if value >= FLAG_AT else OK


def _usable(spec: Any) -> bool:
    """Return True when a distribution has ascending edges and one share per bin."""
    if not isinstance(spec, dict):
        return False
    edges, shares = spec.get("edges"), spec.get("proportions")
    if not isinstance(edges, list) or not isinstance(shares, list) or len(shares) != len(edges) + 1:
        return False
    return all(a < b for a, b in itertools.pairwise(edges))


def _counts(bins: dict[str, int], n_bins: int) -> list[int] | None:
    """Return the counts of bins 0 .. n_bins - 1; None when a stored bin lies outside them (other edges)."""
    if any(not k.isdigit() or int(k) >= n_bins for k in bins):
        return None
    return [int(bins.get(str(b), 0)) for b in range(n_bins)]


def _one(name: str, spec: Any, bins: dict[str, int] | None) -> dict[str, Any]:
    """Return the PSI entry of the score or one feature."""
    if not _usable(spec):
        return {"name": name, "psi": None, "status": "unusable", "why": "training distribution malformed"}
    counts = _counts(bins or {}, len(spec["proportions"]))
    if counts is None:
        return {"name": name, "psi": None, "status": "unusable", "why": "counted on other edges"}
    if not sum(counts):  # no evidence is not "no drift": nothing to show, nor to publish (alarms stay as they are)
        return {"name": name, "psi": None, "status": "no users", "why": NO_USERS, "users": 0}
    value = psi(spec["proportions"], counts)
    return {"name": name, "psi": round(value, 4), "status": status(value), "users": sum(counts)}


def drift_section(drift_bins: dict[str, Any] | None, training: dict[str, Any] | None) -> dict[str, Any]:
    """Return the report's drift section: the score's PSI, each feature's (worst first) and the worst feature."""
    if not isinstance(training, dict) or "score" not in training:
        return {"available": False, "why": NO_DISTRIBUTION}
    bins = drift_bins or {}
    feature_bins = bins.get("features", {})
    features = [_one(name, spec, feature_bins.get(name)) for name, spec in training.get("features", {}).items()]
    features.sort(key=lambda f: (f["psi"] is None, -(f["psi"] or 0.0), f["name"]))
    scored = [f for f in features if f["psi"] is not None]
    return {
        "available": True,
        "training_rows": training.get("rows"),
        # The run's users compared: those seen within the training population's lookback (aggregates.py).
        "lookback_days": training.get("lookback_days"),
        "epsilon": PSI_EPSILON,
        "flag_at": FLAG_AT,
        "alarm_at": ALARM_AT,
        "score": _one("score", training["score"], bins.get("score")),
        "features": features,
        "worst_feature": scored[0] if scored else None,
    }
