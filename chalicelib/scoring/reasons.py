"""Per-user reason codes: which behaviours push this user's churn probability up the most.

Model-agnostic and vectorised: for each reason, the features that speak for it are replaced by a
typical user's values, and the fall in probability is that reason's effect for this user.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chalicelib.scoring.features import FEATURE_NAMES, FEATURE_REASONS, REASON_CODES

MAX_REASONS = 3
# A reason must move the probability by at least this much to be worth telling a person.
MIN_EFFECT = 0.01
# Silence and a gradual decline show in the same activity features, so their joint effect is measured
# once and named by the pattern: silent for this many typical gaps between events is inactivity.
SILENCE_GAPS = 2.5
SILENCE_MIN_DAYS = 14.0
_ACTIVITY_CODES = ("inactivity", "engagement_drop")
_GROUPS: dict[str, np.ndarray] = {
    code: np.array([j for j, name in enumerate(FEATURE_NAMES) if FEATURE_REASONS[name] == code])
    for code in REASON_CODES
    if code not in _ACTIVITY_CODES
}
_GROUPS["activity"] = np.array([j for j, name in enumerate(FEATURE_NAMES) if FEATURE_REASONS[name] in _ACTIVITY_CODES])
_RECENCY = FEATURE_NAMES.index("recency_days")
_RATE_LONG = FEATURE_NAMES.index("activity_rate_long")


def silent(features: np.ndarray) -> np.ndarray:
    """Return whether each user has been silent for several of their own typical gaps (and two weeks)."""
    typical_gap = 1.0 / np.maximum(features[:, _RATE_LONG], 1e-3)
    return features[:, _RECENCY] >= np.maximum(SILENCE_MIN_DAYS, SILENCE_GAPS * typical_gap)


# predict(rows, cols, values): the probability of those rows of the features (an array of their indexes) with
# columns `cols` set to `values`.
WhatIf = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def replaced(matrix: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return a copy of `matrix`'s rows `rows` (indexes or a mask; a slice, which would give a view, is refused)
    with columns `cols` set to `values`."""
    block = matrix[np.asarray(rows)]
    block[:, cols] = values
    return block


def what_if(features: np.ndarray, predict: Callable[[np.ndarray], np.ndarray]) -> WhatIf:
    """Return a WhatIf over `features` that predicts the replaced rows whole with `predict`."""
    return lambda rows, cols, values: predict(replaced(features, rows, cols, values))


def reason_effects(features: np.ndarray, probability: np.ndarray, reference: np.ndarray, predict: WhatIf) -> np.ndarray:
    """Return [users, REASON_CODES]: how much each reason's features raise each user's probability."""
    effects = np.zeros((features.shape[0], len(REASON_CODES)))
    is_silent = silent(features)
    for group, cols in _GROUPS.items():
        # A user whose features already equal the reference gets exactly zero: skip predicting them.
        changed = np.flatnonzero((features[:, cols] != reference[cols]).any(axis=1))
        if not changed.size:
            continue
        effect = probability[changed] - predict(changed, cols, reference[cols])
        if group == "activity":
            code = np.where(is_silent[changed], REASON_CODES.index("inactivity"), REASON_CODES.index("engagement_drop"))
            effects[changed, code] = effect
        else:
            effects[changed, REASON_CODES.index(group)] = effect
    return effects


def top_reasons(effects: np.ndarray) -> list[list[str]]:
    """Return each user's reason codes, strongest first, keeping only effects of MIN_EFFECT or more."""
    if not effects.shape[0]:
        return []
    order = np.argsort(-effects, axis=1)[:, :MAX_REASONS]
    # Strongest first, so the reasons kept are a leading run of each row's order: -1 marks the rest. Few
    # distinct lists exist among many users; each is spelled once and copied to its users.
    kept = np.where(np.take_along_axis(effects, order, axis=1) >= MIN_EFFECT, order, -1)
    distinct, which = np.unique(kept, axis=0, return_inverse=True)
    spelled = [[REASON_CODES[g] for g in row if g >= 0] for row in distinct.tolist()]
    return [spelled[k].copy() for k in which.reshape(-1).tolist()]
