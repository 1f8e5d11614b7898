"""The CDNOW data set of the buy-till-you-die papers, as lifetimes (the reference implementation, dev only) ships it."""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():
    # lifetimes sets a pandas option at import that pandas 3 deprecates; it has no effect on the results compared.
    warnings.simplefilter("ignore", DeprecationWarning)
    import lifetimes
    from lifetimes.datasets import load_cdnow_summary


def cdnow_summary() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the 2,357 CDNOW customers' (x repeat purchases, t_x, T), time in weeks."""
    data = load_cdnow_summary(index_col=[0])
    return data["frequency"].to_numpy(float), data["recency"].to_numpy(float), data["T"].to_numpy(float)


__all__ = ["cdnow_summary", "lifetimes"]
