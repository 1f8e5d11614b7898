"""The training distribution: decile cut points and the share of rows in each bin, as drift reads them."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from churnguard_offline.distribution import DistributionError, binned, training_distribution


def _bins(dist: dict, values: np.ndarray) -> np.ndarray:
    """Return the share of `values` in each bin, read exactly as the shared format says."""
    counts = np.bincount(np.searchsorted(dist["edges"], values, side="right"), minlength=len(dist["edges"]) + 1)
    return counts / counts.sum()


def _well_formed(dist: dict) -> None:
    assert len(dist["proportions"]) == len(dist["edges"]) + 1
    assert all(b > a for a, b in itertools.pairwise(dist["edges"]))
    assert abs(sum(dist["proportions"]) - 1.0) < 1e-9
    assert all(p >= 0 for p in dist["proportions"])


def test_a_continuous_column_is_cut_at_its_nine_deciles_into_ten_tenths():
    # GIVEN a continuous column
    values = np.random.default_rng(1).lognormal(size=10_007)
    # WHEN it is binned
    dist = binned(values)
    # THEN nine ascending cut points give ten bins of a tenth each, and reading the values back gives those shares
    _well_formed(dist)
    assert len(dist["edges"]) == 9
    assert np.allclose(dist["proportions"], 0.1, atol=1e-3)
    assert np.allclose(_bins(dist, values), dist["proportions"], atol=1e-6)


def test_a_value_on_a_cut_point_falls_in_the_bin_above_it():
    # GIVEN values that sit exactly on their own deciles (a counted feature)
    values = np.repeat(np.arange(20.0), 5)
    dist = binned(values)
    # THEN each cut point's own value is counted in the bin that starts there, as searchsorted(side="right") puts it
    _well_formed(dist)
    assert np.allclose(_bins(dist, values), dist["proportions"], atol=1e-6)
    assert dist["proportions"][0] == pytest.approx(np.mean(values < dist["edges"][0]), abs=1e-6)


def test_a_rare_flag_gets_its_own_bin_instead_of_vanishing_into_the_deciles():
    # GIVEN a 0/1 column with 5.7% ones (as unsubscribed is): every decile of it is 0
    values = np.r_[np.zeros(943), np.ones(57)]
    # WHEN it is binned THEN the ones have a bin of their own, so a surge of them shows as drift
    assert binned(values) == {"edges": [1.0], "proportions": [0.943, 0.057]}


def test_a_zero_inflated_column_has_no_empty_bin_below_its_smallest_value():
    # GIVEN a column that is 0 for most rows and continuous above (recent complaints)
    rng = np.random.default_rng(2)
    values = np.where(rng.random(5000) < 0.85, 0.0, rng.exponential(size=5000))
    # WHEN it is binned THEN no cut point sits at or below the smallest value, and no bin is empty
    dist = binned(values)
    _well_formed(dist)
    assert dist["edges"][0] > 0.0
    assert min(dist["proportions"]) > 0
    assert dist["proportions"][0] == pytest.approx(np.mean(values < dist["edges"][0]), abs=1e-6)
    assert dist["proportions"][0] >= np.mean(values == 0.0)


def test_a_constant_column_is_one_bin_holding_everything():
    assert binned(np.zeros(100)) == {"edges": [], "proportions": [1.0]}
    assert binned(np.array([3.5])) == {"edges": [], "proportions": [1.0]}


def test_proportions_sum_to_one_after_rounding_however_the_rows_divide():
    # GIVEN row counts that do not divide into tenths (7 rows, 3 of each of two values and a prime)
    for values in (np.arange(7.0), np.arange(10_009.0) ** 2, np.r_[np.zeros(3), np.ones(3), 2.0]):
        _well_formed(binned(values))


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf, 0.0])])
def test_no_rows_or_a_value_that_is_not_finite_is_refused(bad):
    with pytest.raises(DistributionError):
        binned(bad)


def test_training_distribution_covers_the_score_and_every_named_feature_and_stays_small():
    # GIVEN 50,000 rows of 49 features (the model's width) and their scores
    rng = np.random.default_rng(3)
    names = [f"f{i}" for i in range(49)]
    features, scores = rng.normal(size=(50_000, 49)), rng.random(50_000)
    # WHEN the distribution is measured
    dist = training_distribution(features, scores, names)
    # THEN it has the shared format's keys, every feature by name, and fits in a few kilobytes of JSON
    assert dist["rows"] == 50_000
    assert list(dist["features"]) == names
    for column in (dist["score"], *dist["features"].values()):
        _well_formed(column)
    assert len(json.dumps(dist)) < 12_000


def test_features_that_do_not_match_their_names_or_scores_are_refused():
    with pytest.raises(DistributionError, match="do not match"):
        training_distribution(np.zeros((5, 3)), np.zeros(5), ["a", "b"])
    with pytest.raises(DistributionError, match="do not match"):
        training_distribution(np.zeros((5, 2)), np.zeros(4), ["a", "b"])
