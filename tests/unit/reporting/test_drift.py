"""Drift: PSI against hand-computed values, and what flags and alarms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chalicelib.reporting.aggregates import bin_counts
from chalicelib.reporting.drift import (
    ALARM,
    FLAGGED,
    NO_DISTRIBUTION,
    OK,
    PSI_EPSILON,
    drift_section,
    psi,
    status,
)
from chalicelib.reporting.publish import publish_drift
from tests.unit.reporting.distributions import distribution


def test_psi_of_two_bins_equals_the_hand_computed_value():
    # GIVEN a 50/50 training split and a run that is 75/25
    # THEN PSI = (0.75 - 0.5) ln(0.75 / 0.5) + (0.25 - 0.5) ln(0.25 / 0.5)
    expected = 0.25 * math.log(1.5) + (-0.25) * math.log(0.5)
    assert psi([0.5, 0.5], [75, 25]) == pytest.approx(expected) == pytest.approx(0.274653, abs=1e-6)


def test_an_empty_bin_counts_as_the_epsilon_not_as_infinity():
    # GIVEN a run with nobody in the second bin
    value = psi([0.5, 0.5], [10, 0])
    # THEN its share is floored at PSI_EPSILON: a large, finite term
    expected = 0.5 * math.log(2) + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    assert value == pytest.approx(expected) == pytest.approx(4.604319, abs=1e-6)


def test_the_same_distribution_has_no_drift_and_a_shifted_one_flags_and_alarms():
    rng = np.random.default_rng(3)
    training = rng.normal(0, 1, 20_000)
    spec = distribution(training)
    same = list(bin_counts(rng.normal(0, 1, 5_000), spec["edges"]).values())
    # WHEN the same population is measured again THEN nothing is flagged
    assert status(psi(spec["proportions"], same)) == OK
    # WHEN it moves by a third and by one standard deviation THEN the first is flagged, the second alarmed
    drifted = {}
    for shift in (0.35, 1.0):
        counts = bin_counts(rng.normal(shift, 1, 5_000), spec["edges"])
        drifted[shift] = psi(spec["proportions"], [counts.get(str(b), 0) for b in range(len(spec["proportions"]))])
    assert status(drifted[0.35]) == FLAGGED and status(drifted[1.0]) == ALARM


def test_the_thresholds_read_at_their_boundaries():
    assert (status(0.0999), status(0.1), status(0.2499), status(0.25)) == (OK, FLAGGED, FLAGGED, ALARM)


def test_nothing_seen_is_no_drift_and_mismatched_bins_are_refused():
    assert psi([0.5, 0.5], [0, 0]) == 0.0
    with pytest.raises(ValueError, match="3 observed bins against 2"):
        psi([0.5, 0.5], [1, 1, 1])


def test_a_manifest_without_a_training_distribution_says_so_and_does_not_fail():
    assert drift_section({"score": {"0": 3}}, None) == {"available": False, "why": NO_DISTRIBUTION}
    assert drift_section(None, {"rows": 3})["why"] == "no training distribution in this model's manifest"


def test_the_section_ranks_features_worst_first_and_names_the_worst():
    training = {
        "rows": 100,
        "score": {"edges": [0.5], "proportions": [0.5, 0.5]},
        "features": {
            "calm": {"edges": [1.0], "proportions": [0.5, 0.5]},
            "moved": {"edges": [1.0], "proportions": [0.5, 0.5]},
        },
    }
    bins = {"score": {"0": 50, "1": 50}, "features": {"calm": {"0": 50, "1": 50}, "moved": {"0": 90, "1": 10}}}
    section = drift_section(bins, training)
    assert section["score"]["psi"] == 0.0 and section["score"]["status"] == OK
    assert [f["name"] for f in section["features"]] == ["moved", "calm"]
    assert section["worst_feature"]["name"] == "moved" and section["worst_feature"]["status"] == ALARM


@pytest.mark.parametrize(
    "spec",
    [
        {"edges": [1.0, 0.5], "proportions": [0.3, 0.3, 0.4]},  # edges not ascending
        {"edges": [1.0], "proportions": [1.0]},  # one share short
        {"edges": "1.0", "proportions": [0.5, 0.5]},
        None,
    ],
)
def test_a_malformed_feature_distribution_is_marked_unusable_and_the_rest_still_reported(spec):
    training = {"score": {"edges": [0.5], "proportions": [0.5, 0.5]}, "features": {"bad": spec}}
    section = drift_section({"score": {"0": 1}, "features": {"bad": {"0": 1}}}, training)
    (bad,) = section["features"]
    assert bad["psi"] is None and bad["status"] == "unusable"
    assert section["worst_feature"] is None and section["score"]["psi"] is not None


def test_counts_made_on_other_edges_are_not_compared():
    # GIVEN bins counted on edges with more bins than the manifest's (a model swapped mid-run)
    training = {"score": {"edges": [0.5], "proportions": [0.5, 0.5]}, "features": {}}
    section = drift_section({"score": {"0": 1, "5": 2}}, training)
    assert section["score"]["status"] == "unusable" and section["score"]["why"] == "counted on other edges"


def test_a_run_with_no_users_to_compare_reports_no_figure_rather_than_no_drift():
    # GIVEN a run that compared nobody (an empty table, or every user silent past the lookback)
    training = {
        "rows": 100,
        "score": {"edges": [0.5], "proportions": [0.5, 0.5]},
        "features": {"calm": {"edges": [1.0], "proportions": [0.5, 0.5]}},
    }
    section = drift_section({"score": {}, "features": {}}, training)
    # THEN neither the score nor a feature reads "ok" on zero users: there is no PSI to show or to publish
    assert section["score"]["psi"] is None and section["score"]["status"] != OK
    assert section["worst_feature"] is None
    added: list[dict] = []

    class Metrics:
        def add_metric(self, **kw):
            added.append(kw)

    publish_drift(Metrics(), section)
    assert added == []  # a 0.0 would set the drift alarms back to OK on no evidence
