"""Reasons are faithful to the model, and users with little history get sensible scores.

Behaviours are planted in otherwise ordinary users; the reason that names the planted behaviour must
come first. A reason names what the model has learned: the planted behaviours are checked against a
model fitted where each of them leads to churn, and the packaged model against what its own training
data teaches (long silence).
"""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.scoring.artifact import ChurnModel, load_model
from chalicelib.scoring.events import SECONDS_PER_DAY, TYPE_CODE, EventBatch
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.reasons import reason_effects, top_reasons
from chalicelib.scoring.scorer import Scorer
from chalicelib.scoring.state import build_state
from tests.conftest import ROOT

AS_OF = 1_790_000_000.0
DAY = SECONDS_PER_DAY


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(load_model(ROOT / "model_artifacts"))


def ordinary(
    days: int = 330, quiet_days: float = 3, purchase_every: float = 30, rng: np.random.Generator | None = None
) -> list[tuple[float, str, float]]:
    """Return a typical retained user's events: about one a week of mixed kinds, a purchase every few weeks."""
    rng = rng or np.random.default_rng(0)
    kinds = ("login", "session", "content_view", "feature_use", "social_interaction")
    rows = []
    t = AS_OF - days * DAY
    while t < AS_OF - quiet_days * DAY:
        kind = kinds[rng.integers(len(kinds))]
        rows.append((t, kind, float(rng.uniform(5, 40)) if kind == "session" else np.nan))
        t += rng.exponential(7.0) * DAY
    t = AS_OF - days * DAY + rng.exponential(purchase_every) * DAY
    while t < AS_OF - quiet_days * DAY:
        rows.append((t, "purchase", float(rng.uniform(20, 50))))
        t += rng.exponential(purchase_every) * DAY
    return rows


def _batch(users: dict[str, list[tuple[float, str, float]]]) -> EventBatch:
    ids = list(users)
    index, times, types, values = [], [], [], []
    for i, uid in enumerate(ids):
        for t, kind, v in users[uid]:
            index.append(i)
            times.append(t)
            types.append(TYPE_CODE[kind])
            values.append(v)
    return EventBatch(
        user_ids=ids,
        user_index=np.array(index, dtype=np.int32),
        time=np.array(times),
        type_code=np.array(types, dtype=np.int8),
        value=np.array(values),
    )


def _score(scorer: Scorer, users: dict[str, list]) -> dict[str, tuple[float, list[str]]]:
    """Return each user's probability and reason codes (computed for every user, whatever the tier)."""
    state = build_state(_batch(users))
    features = compute_features(state.values, AS_OF)
    model = scorer.model
    p = model.predict_proba(features)
    reasons = top_reasons(reason_effects(features, p, model.reference, model.what_if(features)))
    return {uid: (float(p[i]), reasons[i]) for i, uid in enumerate(state.user_ids)}


def test_ordinary_engaged_user_is_low_risk(scorer):
    [(p, _)] = _score(scorer, {"steady": ordinary()}).values()
    assert p < 0.2


def test_packaged_model_names_long_silence_first(scorer):
    res = _score(scorer, {"u": ordinary(quiet_days=45), "steady": ordinary()})
    p, reasons = res["u"]
    assert p > 5 * res["steady"][0]
    assert reasons[0] == "inactivity", res


# Behaviours planted in ordinary users, as event edits.
def _complaint_surge(rows, rng):
    return rows + [(AS_OF - d * DAY, "complaint", np.nan) for d in rng.choice(np.arange(1, 12), 3, replace=False)]


def _long_silence(rows, rng):
    quiet = rng.uniform(35, 60)
    return [r for r in rows if r[0] < AS_OF - quiet * DAY]


def _coupon_only(rows, rng):
    return rows + [(t - 60, "coupon_redeem", np.nan) for t, kind, _ in rows if kind == "purchase"]


def _spend_collapse(rows, rng):
    # Still as active, but buying stopped a few months ago: those visits no longer end in a purchase.
    since = AS_OF - rng.uniform(80, 120) * DAY
    return [(t, "login", np.nan) if kind == "purchase" and t > since else (t, kind, v) for t, kind, v in rows]


PLANTS = {
    "complaints": _complaint_surge,
    "inactivity": _long_silence,
    "price_sensitivity": _coupon_only,
    "spend_drop": _spend_collapse,
}


@pytest.fixture(scope="module")
def planted_model() -> Scorer:
    """A model fitted on users where each planted behaviour causes churn, as the model's own history would."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(0)
    users, labels = {}, []
    for i in range(2500):
        rows = ordinary(purchase_every=rng.uniform(15, 40), quiet_days=rng.uniform(0, 6), rng=rng)
        plant = rng.choice([None, *PLANTS], p=[0.6, 0.1, 0.1, 0.1, 0.1])
        if plant is not None:
            rows = PLANTS[plant](rows, rng)
        users[f"u{i}"] = rows
        labels.append(rng.random() < (0.75 if plant else 0.08))
    state = build_state(_batch(users))
    X, y = compute_features(state.values, AS_OF), np.array(labels, dtype=int)
    pipeline = Pipeline([("clf", HistGradientBoostingClassifier(max_iter=150, random_state=0))]).fit(X, y)
    manifest = {
        "model_version": "planted",
        "risk_thresholds": {"high": 0.6, "medium": 0.3},
        "value_thresholds": {"basis": "net_spend", "high": 1e9, "medium": 1e9},
        "reference_features": dict(zip(FEATURE_NAMES, np.median(X[y == 0], axis=0), strict=True)),
    }
    return Scorer(ChurnModel(pipeline, manifest))


@pytest.mark.parametrize("code", list(PLANTS))
def test_planted_behaviour_is_named_first(planted_model, code):
    # GIVEN ordinary users, each with one behaviour planted
    rng = np.random.default_rng(42)
    users = {f"{code}-{i}": PLANTS[code](ordinary(purchase_every=20, rng=rng), rng) for i in range(20)}
    # WHEN they are scored and explained
    result = _score(planted_model, users)
    # THEN the code of the planted behaviour comes first for (nearly) all of them
    first = [reasons[0] if reasons else None for _, reasons in result.values()]
    assert first.count(code) >= 18, first


def test_users_with_little_history_get_sensible_scores(scorer):
    res = _score(
        scorer,
        {
            "new_today": [(AS_OF - 3600, "login", np.nan)],
            "one_purchase_yesterday": [(AS_OF - DAY, "purchase", 25.0)],
            "one_event_long_ago": [(AS_OF - 80 * DAY, "login", np.nan)],
        },
    )
    probs = {u: p for u, (p, _) in res.items()}
    assert all(0.02 < p < 0.98 for u, p in probs.items() if u != "one_event_long_ago"), probs
    assert probs["one_event_long_ago"] > max(probs["new_today"], probs["one_purchase_yesterday"]), probs
