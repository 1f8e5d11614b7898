"""The buy-till-you-die classifier: BG/NBD's or Pareto/NBD's P(no event) itself, usable wherever a model is."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sklearn.base import clone

from chalicelib.errors import InputError
from chalicelib.scoring.artifact import ChurnModel
from chalicelib.scoring.btyd import BgNbd, BtydFeatures, BtydFit, btyd_from_features
from chalicelib.scoring.btyd_model import BtydClassifier
from chalicelib.scoring.features import FEATURE_NAMES, REASON_CODES, compute_features
from chalicelib.scoring.pareto_nbd import ParetoNbd
from chalicelib.scoring.reasons import reason_effects
from chalicelib.scoring.state import build_state
from churnguard_offline.generate import generate_events

END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    # A generated half-year: users who buy, drift away and fall silent, as buy-till-you-die models expect.
    events = generate_events(200, 180, 4, END)
    return compute_features(build_state(events).values, END.timestamp())


@pytest.mark.parametrize(("name", "model"), [("bg_nbd", BgNbd), ("pareto_nbd", ParetoNbd)])
def test_btyd_classifier_probabilities_are_the_fitted_models_p_no_event(features, name, model):
    # GIVEN the BTYD model fitted directly on the features' (x, t_x, T)
    inputs = btyd_from_features(features)
    expected = model().fit(*inputs).p_no_event(*inputs, 45.0)
    # WHEN the classifier is fitted on the same rows THEN its churn column is that P(no event), the other its rest
    proba = BtydClassifier(model=name, horizon_days=45.0).fit(features, np.zeros(len(features))).predict_proba(features)
    np.testing.assert_allclose(proba[:, 1], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_btyd_classifier_learns_nothing_from_the_labels_but_its_classes(features):
    rng = np.random.default_rng(1)
    a = BtydClassifier(model="pareto_nbd").fit(features, rng.integers(0, 2, len(features)))
    b = BtydClassifier(model="pareto_nbd").fit(features, np.ones(len(features), dtype=int))
    # THEN whatever the labels, the probabilities are the same, and churn is always the second class
    np.testing.assert_array_equal(a.predict_proba(features), b.predict_proba(features))
    assert a.classes_.tolist() == b.classes_.tolist() == [0, 1]
    assert set(a.predict(features)) <= {0, 1}


@pytest.mark.parametrize(
    ("kwargs", "labels", "match"),
    [
        ({"model": "lifetimes"}, None, "model must be one of"),
        ({"horizon_days": -3.0}, None, "horizon_days"),
        ({"horizon_days": float("nan")}, None, "horizon_days"),
        ({}, "strings", "labels must be 0"),
    ],
)
def test_btyd_classifier_refuses_hostile_arguments_by_name(features, kwargs, labels, match):
    y = np.array(["churned"] * len(features)) if labels == "strings" else None
    with pytest.raises(InputError, match=match):
        BtydClassifier(**kwargs).fit(features, y)


def test_an_unfitted_btyd_classifier_says_so():
    with pytest.raises(InputError, match="not fitted"):
        BtydClassifier().predict_proba(np.zeros((2, len(FEATURE_NAMES))))


def test_reason_effects_of_a_btyd_model_come_from_the_recency_and_tenure_it_reads(features):
    # GIVEN a BTYD model as the churn model, and a typical user as the reference
    clf = BtydClassifier(model="bg_nbd", horizon_days=30.0).fit(features)
    model = ChurnModel(clf, {"reference_features": dict(zip(FEATURE_NAMES, np.median(features, axis=0)))})
    p = model.predict_proba(features)
    # WHEN reason effects re-predict with each group of features reset to the reference
    effects = reason_effects(features, p, model.reference, model.what_if(features))
    # THEN they are finite, and only what a BTYD model reads (recency: activity; tenure: new user) moves it
    assert effects.shape == (len(features), len(REASON_CODES)) and np.isfinite(effects).all()
    read = [REASON_CODES.index(c) for c in ("inactivity", "engagement_drop", "new_user")]
    others = [j for j in range(len(REASON_CODES)) if j not in read]
    assert np.abs(effects[:, read[:2]]).max() > 0.01
    assert np.abs(effects[:, others]).max() < 1e-9


def test_a_btyd_classifier_predicts_nothing_for_no_rows(features):
    clf = BtydClassifier().fit(features)
    assert ChurnModel(clf, {}).predict_proba(np.zeros((0, len(FEATURE_NAMES)))).shape == (0,)


def test_one_btyd_fit_shared_by_pipelines_and_their_clones_is_the_fit_each_would_make(features, pareto_fits):
    # GIVEN BG/NBD and Pareto/NBD fitted once on the rows (BtydFit), and the features and classifier fitted alone
    shared = BtydFit.on(features)
    alone = BtydFeatures(horizon_days=45.0).fit(features)
    assert len(pareto_fits) == 2
    pareto_fits.clear()
    # WHEN pipelines given the shared fit are cloned (as calibration folds are) and fitted, on a part of the rows too
    given = clone(BtydFeatures(horizon_days=45.0, fitted=shared)).fit(features)
    on_a_part = clone(BtydFeatures(horizon_days=45.0, fitted=shared)).fit(features[:50])
    classifier = clone(BtydClassifier(model="pareto_nbd", horizon_days=45.0, fitted=shared)).fit(features[:50])
    # THEN none of them fits again, and each says what fitting alone on all the rows says
    assert pareto_fits == []
    np.testing.assert_array_equal(given.transform(features), alone.transform(features))
    np.testing.assert_array_equal(on_a_part.transform(features), alone.transform(features))
    expected = ParetoNbd().fit(*btyd_from_features(features)).p_no_event(*btyd_from_features(features), 45.0)
    np.testing.assert_allclose(classifier.predict_proba(features)[:, 1], expected)
    # AND a shared fit that has no finite Pareto/NBD cannot make a Pareto/NBD classifier
    with pytest.raises(InputError, match="no finite fit"):
        BtydClassifier(model="pareto_nbd", fitted=BtydFit(shared.bgnbd, None)).fit(features)
