"""Training distributions in the manifest's format, measured here from a population, for the report's tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from chalicelib.scoring.artifact import ChurnModel
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.state import build_state


def distribution(values: np.ndarray) -> dict[str, Any]:
    """Return the deciles' interior cut points (duplicates removed) and the share of `values` in each bin."""
    edges = sorted({float(x) for x in np.quantile(values, np.linspace(0.1, 0.9, 9))})
    bins = np.searchsorted(np.asarray(edges), values, side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {"edges": edges, "proportions": (counts / counts.sum()).tolist()}


def with_training_distribution(model: ChurnModel, events, as_of: float) -> ChurnModel:
    """Return the model with a training distribution measured on `events` as of `as_of`."""
    state = build_state(events)
    features = compute_features(state.values, as_of)
    probability = model.predict_proba(features)
    names = list(model.manifest.get("feature_names", FEATURE_NAMES))
    training = {
        "rows": len(features),
        "score": distribution(probability),
        "features": {name: distribution(features[:, i]) for i, name in enumerate(names)},
    }
    return replace(model, manifest={**model.manifest, "training_distribution": training})
