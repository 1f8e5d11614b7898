"""The training distribution kept in the manifest: what the run report's drift (PSI) compares today's users against.

For the score and every model feature: the training deciles as interior cut points and the share of the
training rows in each bin. A value v falls in bin `numpy.searchsorted(edges, v, side="right")`, so there are
len(edges) + 1 bins. Kept to a few numbers per feature because the manifest is read at every cold start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DECILES = np.linspace(0.1, 0.9, 9)
# A column with at most this many distinct values gets one bin per value: its deciles would merge a rare
# value (5.7% of users unsubscribed) into the common one and leave nothing to compare.
MAX_DISCRETE_VALUES = 10
# Significant digits kept of an edge: enough to tell deciles apart, short in the manifest.
EDGE_DIGITS = 6
# Decimal places kept of a proportion; the rounding remainder goes to the largest bin, so they sum to 1.
PROPORTION_DECIMALS = 6


class DistributionError(ValueError):
    """Rows that no distribution can be measured on (none, or a value that is not finite)."""


def _round_edge(value: float) -> float:
    return float(f"{value:.{EDGE_DIGITS}g}")


def binned(values: np.ndarray) -> dict[str, list[float]]:
    """Return {"edges", "proportions"} of one column: deciles as cut points, the share of values in each bin.

    Duplicate deciles are removed, and so is a cut at or below the smallest value (its bin would be empty).
    A column of at most MAX_DISCRETE_VALUES distinct values is cut at each value above the smallest instead,
    so it has one bin per value; a constant column has a single bin holding everything.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise DistributionError("no rows to measure a distribution on")
    if not np.isfinite(values).all():
        raise DistributionError(f"{int((~np.isfinite(values)).sum())} value(s) are not finite")
    distinct = np.unique(values)
    cuts = distinct[1:] if distinct.size <= MAX_DISCRETE_VALUES else np.quantile(values, DECILES)
    edges = [e for e in sorted({_round_edge(float(c)) for c in cuts}) if e > float(distinct[0])]
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {"edges": edges, "proportions": _proportions(counts)}


def _proportions(counts: np.ndarray) -> list[float]:
    """Return counts as shares rounded to PROPORTION_DECIMALS, the remainder on the largest, summing to 1."""
    shares = np.round(counts / counts.sum(), PROPORTION_DECIMALS)
    largest = int(np.argmax(shares))
    shares[largest] = round(1.0 - float(shares.sum() - shares[largest]), PROPORTION_DECIMALS)
    return [float(s) for s in shares]


def training_distribution(features: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Return the manifest's `training_distribution` of the rows `features` (columns `names`) and their scores."""
    features = np.asarray(features, dtype=float)
    if features.ndim != 2 or features.shape[1] != len(names) or features.shape[0] != len(scores):
        raise DistributionError(f"features {features.shape} do not match {len(names)} names and {len(scores)} scores")
    return {
        "rows": int(features.shape[0]),
        "score": binned(scores),
        "features": {name: binned(features[:, i]) for i, name in enumerate(names)},
    }
