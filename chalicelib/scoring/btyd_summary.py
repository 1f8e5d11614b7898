"""What BG/NBD and Pareto/NBD both read of a customer, checked: x repeat transactions, t_x the time of the last since
the first, T the time from the first to now."""

from __future__ import annotations

from typing import Any

import numpy as np

from chalicelib.errors import InputError


def fit_inputs(x: Any, t_x: Any, T: Any, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Return checked (x, t_x, T) to fit on, and the scale of time that makes the oldest customer 10 old.

    Fitted in that unit, the rates start near 1 and the optimiser sees a well-scaled problem whatever unit the
    caller uses; only the rate parameters depend on it (divide them by the scale).
    """
    x, t_x, T = checked_inputs(x, t_x, T)
    if x.size == 0:
        raise InputError(f"{model} needs at least one customer to fit on")
    return x, t_x, T, 10.0 / T.max() if T.max() > 0 else 1.0


def checked_inputs(x: Any, t_x: Any, T: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if not x.shape == t_x.shape == T.shape:
        raise InputError(f"x, t_x and T differ in shape: {x.shape}, {t_x.shape}, {T.shape}")
    if not (np.all(np.isfinite(T)) and np.all(x >= 0) and np.all(t_x >= 0) and np.all(t_x <= T)):
        raise InputError("buy-till-you-die inputs need x >= 0 and 0 <= t_x <= T, all finite")
    return x, t_x, T
