"""Fixtures the run tests on fakes share: one synthetic population per module and a fresh world per test."""

from __future__ import annotations

import pytest

from chalicelib.scoring.events import EventBatch
from churnguard_offline.generate import generate_events
from tests.unit.runs.test_runs_on_fakes import AS_OF, World


@pytest.fixture(scope="module")
def population() -> EventBatch:
    """A year of behaviour of 120 synthetic users (three chunks of forty), ending at AS_OF."""
    return generate_events(120, 365, 11, AS_OF)


@pytest.fixture
def world() -> World:
    """Return a fresh pipeline on in-memory fakes."""
    return World()
