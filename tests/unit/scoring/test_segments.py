"""RFM segments and activity clusters: fitted at training, applied from the manifest, named as CRM teams name them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from chalicelib.scoring.artifact import load_model
from chalicelib.scoring.events import SECONDS_PER_DAY
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.segments import SEGMENTS, activity_clusters, fit_segments, rfm_scores, rfm_segments
from chalicelib.scoring.state import build_state
from churnguard_offline.generate import generate_events
from tests.conftest import ROOT
from tests.unit.scoring.test_reasons_and_edges import AS_OF, _batch, ordinary

END = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def fitted():
    events = generate_events(3000, 365, 9, END)
    features = compute_features(build_state(events).values, END.timestamp())
    return features, fit_segments(features, seed=0)


def test_the_fit_is_plain_numbers_that_survive_json(fitted):
    _, spec = fitted
    assert json.loads(json.dumps(spec)) == spec
    assert spec["basis"] == "purchases"


def test_every_user_gets_a_known_segment_and_scores_rise_with_recency_frequency_and_money(fitted):
    features, spec = fitted
    segments = rfm_segments(features, spec)
    assert set(segments) <= set(SEGMENTS) and len(set(segments)) >= 6
    r, f, m = rfm_scores(features, spec)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    champions, lost = segments == "champions", segments == "lost"
    assert features[champions, col["recency_days"]].max() < features[lost, col["recency_days"]].min()
    assert features[champions, col["log_net_spend"]].mean() > features[lost, col["log_net_spend"]].mean()
    for scores in (r, f, m):
        assert set(np.unique(scores)) <= {1, 2, 3, 4, 5} and len(np.unique(scores)) >= 4


def test_activity_clusters_are_ordered_by_how_active_their_users_are(fitted):
    features, spec = fitted
    clusters = activity_clusters(features, spec)
    rate = features[:, FEATURE_NAMES.index("activity_rate_mid")]
    means = [rate[clusters == label].mean() for label in ("high", "medium", "low")]
    assert means[0] > means[1] > means[2]
    assert all((clusters == label).sum() > 50 for label in ("high", "medium", "low"))


def test_planted_users_land_in_the_segments_their_behaviour_names():
    # GIVEN the packaged model's segments, and users whose behaviour is plain to read
    model = load_model(ROOT / "model_artifacts")
    spec = model.manifest["segments"]
    regular = ordinary(days=330, quiet_days=1, purchase_every=6)  # buys every week, seen yesterday
    gone_big = [(t - 200 * SECONDS_PER_DAY, k, v * 5) for t, k, v in ordinary(days=330, purchase_every=4)]
    gone_small = [(AS_OF - 300 * SECONDS_PER_DAY, "login", float("nan"))]
    daily = [(AS_OF - d * SECONDS_PER_DAY / 3, k, 30.0) for d in range(1, 360) for k in ("session", "content_view")]
    users = {"regular": regular, "gone_big": gone_big, "gone_small": gone_small, "daily": daily}
    state = build_state(_batch(users))
    features = compute_features(state.values, AS_OF)

    # THEN a recent frequent buyer is a champion, a silent big spender is not to lose, a silent one-off is lost
    segments = dict(zip(state.user_ids, rfm_segments(features, spec)))
    assert (segments["regular"], segments["gone_big"], segments["gone_small"]) == ("champions", "cant_lose", "lost")
    # AND several sessions a day is high activity, a weekly user medium, a year's silence low
    clusters = dict(zip(state.user_ids, activity_clusters(features, spec)))
    assert (clusters["daily"], clusters["regular"], clusters["gone_small"]) == ("high", "medium", "low")
