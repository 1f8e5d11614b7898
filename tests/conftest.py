"""Shared fixtures: small event batches and a project root."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from chalicelib.scoring.events import EVENT_TYPES, EventBatch

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py (scripts are not a package) once, as module `churnguard_<name>_script`."""
    module_name = f"churnguard_{name}_script"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def make_events(n_users: int, n_events: int, seed: int, end: datetime, days: int = 200) -> EventBatch:
    """Return random events of every type for `n_users` users over `days` days before `end`."""
    rng = np.random.default_rng(seed)
    end_s = end.timestamp()
    types = rng.integers(0, len(EVENT_TYPES), n_events).astype(np.int8)
    value = np.where(rng.random(n_events) < 0.7, np.round(rng.gamma(2.0, 20.0, n_events), 2), np.nan)
    return EventBatch(
        user_ids=[f"u{i:04d}" for i in range(n_users)],
        user_index=rng.integers(0, n_users, n_events).astype(np.int32),
        time=np.floor(end_s - rng.random(n_events) * days * 86400.0),
        type_code=types,
        value=value,
    )


@pytest.fixture
def as_of() -> datetime:
    return datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def pareto_fits(monkeypatch) -> list[int]:
    """Return the list of the row counts of every Pareto/NBD fit made while the test runs, in order."""
    from chalicelib.scoring.pareto_nbd import ParetoNbd

    fits: list[int] = []
    original = ParetoNbd.fit

    def counted(self, x, t_x, T):
        fits.append(len(x))
        return original(self, x, t_x, T)

    monkeypatch.setattr(ParetoNbd, "fit", counted)
    return fits
