"""Training writes a version of its whole decision: the same training twice gives the same version, other
thresholds over the same model bytes another, and the manifest carries the training distribution."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from threadpoolctl import threadpool_limits

from chalicelib.scoring.artifact import MANIFEST_FILE, load_model
from chalicelib.scoring.features import FEATURE_NAMES
from chalicelib.scoring.model_version import check_model_version
from churnguard_offline.generate import generate_events
from churnguard_offline.training import TierPolicy, train

CUTOFF = datetime(2026, 5, 2, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def events():
    return generate_events(900, 150, 4, datetime(2026, 6, 1, tzinfo=UTC))


def _train(events, out, policy=None, threads: int = 1) -> dict:
    with threadpool_limits(limits=threads, user_api="openmp"):
        train(events, cutoff=CUTOFF, horizon_days=30, out_dir=out, seed=0, policy=policy, max_origins=3)
    return json.loads((out / MANIFEST_FILE).read_text())


@pytest.mark.slow  # trains three models: left to make test
def test_the_same_training_twice_gives_the_same_version_and_other_thresholds_another(events, tmp_path):
    # GIVEN the same events, seed and arguments trained twice (on one OpenMP thread and on two), and once more
    # with fixed thresholds
    first = _train(events, tmp_path / "first")
    again = _train(events, tmp_path / "again", threads=2)
    fixed = _train(events, tmp_path / "fixed", TierPolicy(mode="fixed", fixed={"high": 0.7, "medium": 0.4}))

    # THEN the two alike have the same model bytes and one version, whatever their creation time and threads
    assert again["model_sha256"] == first["model_sha256"]
    assert again["model_version"] == first["model_version"]
    assert again["decision_sha256"] == first["decision_sha256"]
    assert first["model_version"].startswith("churn-20260502-")
    # AND the model bytes are the same under other thresholds, but the version is not
    assert fixed["model_sha256"] == first["model_sha256"]
    assert fixed["model_version"] != first["model_version"]
    # AND every artifact loads under the version it was written with
    for name, manifest in (("first", first), ("fixed", fixed)):
        check_model_version(manifest, name)
        assert load_model(tmp_path / name).model_version == manifest["model_version"]
    # AND the manifest holds the training distribution of the latest origin's users, every feature in it
    dist = first["training_distribution"]
    assert dist["rows"] == first["validation"]["users"] and dist["cutoff"] == first["validation"]["cutoff"]
    assert list(dist["features"]) == list(FEATURE_NAMES)
    assert "## Training distribution" in (tmp_path / "first" / "model_card.md").read_text()


def _boosted(threads: int):
    """Return a small calibrated boosted model (as training may wrap the winner) fitted on `threads` OpenMP threads."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    with threadpool_limits(limits=threads, user_api="openmp"):
        return CalibratedClassifierCV(HistGradientBoostingClassifier(max_iter=5, random_state=0), cv=2).fit(X, y)


def test_a_boosted_model_saves_to_the_same_bytes_whatever_thread_count_its_bin_mappers_kept(tmp_path):
    import copy

    from churnguard_offline.training import _save_model

    # GIVEN a boosted model fitted on one thread, and a copy whose bin mappers say two (as a fit on two cores keeps)
    one = _boosted(1)
    two = copy.deepcopy(one)
    mappers = [c.estimator._bin_mapper for c in two.calibrated_classifiers_]
    assert [m.n_threads for m in mappers] == [1, 1]
    for mapper in mappers:
        mapper.n_threads = 2
    # WHEN both are saved THEN the bytes are the same: the thread count is not in them
    assert _save_model(one, tmp_path / "one") == _save_model(two, tmp_path / "two")


@pytest.mark.slow  # two OpenMP threads on a loaded two-core machine take seconds for a tiny fit
def test_a_boosted_model_fitted_on_one_thread_and_on_two_saves_to_the_same_bytes(tmp_path):
    from churnguard_offline.training import _save_model

    assert _save_model(_boosted(1), tmp_path / "one") == _save_model(_boosted(2), tmp_path / "two")
