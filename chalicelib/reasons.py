"""Per-user reason codes: which behaviours push this user's churn probability up the most.

Model-agnostic and vectorised: for each reason, the features that speak for it are replaced by a
typical user's values, and the fall in probability is that reason's effect for this user.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chalicelib.features import FEATURE_NAMES, FEATURE_REASONS, REASON_CODES

MAX_REASONS = 3
# A reason must move the probability by at least this much to be worth telling a person.
MIN_EFFECT = 0.01
_GROUPS: dict[str, np.ndarray] = {
    code: np.array([j for j, name in enumerate(FEATURE_NAMES) if FEATURE_REASONS[name] == code])
    for code in REASON_CODES
}


def reason_effects(
    features: np.ndarray, probability: np.ndarray, reference: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """Return [users, REASON_CODES]: how much each reason's features raise each user's probability."""
    effects = np.zeros((features.shape[0], len(REASON_CODES)))
    for g, code in enumerate(REASON_CODES):
        cols = _GROUPS[code]
        # A user whose features already equal the reference gets exactly zero: skip predicting them.
        changed = np.flatnonzero((features[:, cols] != reference[cols]).any(axis=1))
        if changed.size:
            block = features[changed]
            block[:, cols] = reference[cols]
            effects[changed, g] = probability[changed] - predict(block)
    return effects


def top_reasons(effects: np.ndarray) -> list[list[str]]:
    """Return each user's reason codes, strongest first, keeping only effects of MIN_EFFECT or more."""
    order = np.argsort(-effects, axis=1)[:, :MAX_REASONS]
    out: list[list[str]] = []
    for i in range(effects.shape[0]):
        out.append([REASON_CODES[g] for g in order[i] if effects[i, g] >= MIN_EFFECT])
    return out
