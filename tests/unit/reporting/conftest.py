"""Fixtures the report's tests share: the runs' synthetic population and a model whose manifest has its
training distribution (the committed manifest may predate it)."""

from __future__ import annotations

import pytest

from chalicelib.scoring.artifact import MODEL_CACHE, ChurnModel
from chalicelib.scoring.events import EventBatch
from churnguard_offline.generate import generate_events
from tests.unit.reporting.distributions import with_training_distribution
from tests.unit.runs.test_runs_on_fakes import AS_OF


@pytest.fixture(scope="module")
def population() -> EventBatch:
    """A year of behaviour of 120 synthetic users, ending at AS_OF (as the run tests' population)."""
    return generate_events(120, 365, 11, AS_OF)


@pytest.fixture(scope="module")
def model(population) -> ChurnModel:
    """The committed model, its manifest given a training distribution measured on the population."""
    return with_training_distribution(MODEL_CACHE.get(), population, AS_OF.timestamp())
