"""Training and evaluation from a customer's own history: features to a cutoff, churn after it."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from chalicelib.errors import InputError
from chalicelib.events import SECONDS_PER_DAY, EventBatch
from chalicelib.features import FEATURE_NAMES, compute_features
from chalicelib.metrics import classification_metrics, tier_performance
from chalicelib.model import CARD_FILE, MANIFEST_FILE, MODEL_FILE, ChurnModel, library_versions, sha256_of
from chalicelib.scoring import iso_time
from chalicelib.state import LAYOUT_ID, build_state, col
from chalicelib.tiers import fit_value_thresholds

MIN_CLASS_ROWS = 50
DEFAULT_LOOKBACK_DAYS = 180
DEFAULT_THRESHOLDS = {"high": 0.6, "medium": 0.3}


@dataclass
class LabelledSet:
    """Users known at the cutoff, their features at the cutoff and whether they churned after it."""

    user_ids: list[str]
    features: np.ndarray
    labels: np.ndarray  # 1 = no event in (cutoff, cutoff + horizon]
    cutoff: float
    horizon_days: float


def labelled_set(
    events: EventBatch, cutoff: float, horizon_days: float, lookback_days: float = DEFAULT_LOOKBACK_DAYS
) -> LabelledSet:
    """Build features from events at or before `cutoff` and labels from the horizon after it.

    The population is users with an event in the `lookback_days` before the cutoff: users gone
    for longer are churned already, and keeping them would flatter every metric.
    """
    if len(events) == 0:
        raise InputError("the event log holds no usable events")
    end = cutoff + horizon_days * SECONDS_PER_DAY
    data_end = float(events.time.max())
    if end > data_end + SECONDS_PER_DAY:
        raise InputError(
            f"the horizon ends {iso_time(end)}, after the last event ({iso_time(data_end)}); "
            "use an earlier --cutoff or a shorter --horizon-days"
        )
    before = events.time <= cutoff
    if not before.any():
        raise InputError(f"no events at or before the cutoff {iso_time(cutoff)}; nothing to learn from")
    history = events.select(before)
    state = build_state(history)
    features = compute_features(state.values, cutoff)
    recent = state.values[:, col("last_seen")] >= cutoff - lookback_days * SECONDS_PER_DAY
    index = {uid: i for i, uid in enumerate(history.user_ids)}
    in_horizon = (events.time > cutoff) & (events.time <= end)
    active_after = np.zeros(len(history.user_ids), dtype=bool)
    later_users = {events.user_ids[u] for u in np.unique(events.user_index[in_horizon])}
    for uid in later_users:
        if uid in index:
            active_after[index[uid]] = True
    keep = np.flatnonzero(recent)
    return LabelledSet(
        user_ids=[history.user_ids[i] for i in keep],
        features=features[keep],
        labels=(~active_after[keep]).astype(int),
        cutoff=cutoff,
        horizon_days=horizon_days,
    )


def check_learnable(data: LabelledSet) -> None:
    """Raise InputError when there are too few churners or stayers to learn from."""
    churners = int(data.labels.sum())
    stayers = int(data.labels.size - churners)
    if min(churners, stayers) < MIN_CLASS_ROWS:
        raise InputError(
            f"too few examples to learn from at this cutoff: {churners} churners and {stayers} stayers "
            f"among {data.labels.size} users (need at least {MIN_CLASS_ROWS} of each)"
        )


def candidates(seed: int) -> dict[str, Any]:
    """Return the candidate pipelines, each a scikit-learn Pipeline over the feature matrix."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "logistic_regression": Pipeline(
            [("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5, max_iter=3000))]
        ),
        "random_forest": Pipeline(
            [
                (
                    "clf",
                    RandomForestClassifier(
                        n_estimators=150, min_samples_leaf=30, max_features="sqrt", n_jobs=2, random_state=seed
                    ),
                )
            ]
        ),
        "hist_gradient_boosting": Pipeline(
            [
                (
                    "clf",
                    HistGradientBoostingClassifier(
                        # Measured: as good as 0.05 / 31 leaves on validation, at half the trees,
                        # and scoring time (reasons need several predictions per user) follows trees.
                        learning_rate=0.1,
                        max_iter=400,
                        max_leaf_nodes=15,
                        min_samples_leaf=40,
                        l2_regularization=1.0,
                        early_stopping=True,
                        validation_fraction=0.15,
                        n_iter_no_change=20,
                        random_state=seed,
                    ),
                )
            ]
        ),
    }


def _clean(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def train(
    events: EventBatch,
    *,
    cutoff: float,
    horizon_days: float,
    out_dir: Path,
    seed: int = 0,
    thresholds: dict[str, float] | None = None,
    lookback_days: float = DEFAULT_LOOKBACK_DAYS,
    source: str = "",
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Fit every candidate, keep the best on held-out users, write the artifact; return its manifest."""
    import joblib
    from sklearn.model_selection import train_test_split

    thresholds = dict(thresholds or DEFAULT_THRESHOLDS)
    progress("building features and labels")
    data = labelled_set(events, cutoff, horizon_days, lookback_days)
    check_learnable(data)
    X, y = data.features, data.labels
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)

    scores: dict[str, dict[str, float]] = {}
    fitted: dict[str, Any] = {}
    for name, pipeline in candidates(seed).items():
        progress(f"fitting {name} on {len(y_fit)} users")
        pipeline.fit(X_fit, y_fit)
        fitted[name] = pipeline
        scores[name] = _clean(classification_metrics(y_val, pipeline.predict_proba(X_val)[:, 1]))
    # PR-AUC decides: retention teams act on the top of the ranking, where PR-AUC looks.
    winner = max(scores, key=lambda n: (scores[n]["pr_auc"], -scores[n]["brier"]))
    runner_up = max((n for n in scores if n != winner), key=lambda n: scores[n]["pr_auc"])
    p_val = fitted[winner].predict_proba(X_val)[:, 1]

    progress(f"refitting {winner} on all {len(y)} users")
    final = candidates(seed)[winner].fit(X, y)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    joblib.dump(final, model_path, compress=3)
    digest = sha256_of(model_path)
    created = datetime.now(UTC)
    manifest: dict[str, Any] = {
        "model_version": f"churn-{created:%Y%m%d}-{digest[:8]}",
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "estimator": winner,
        "feature_names": list(FEATURE_NAMES),
        "state_layout": LAYOUT_ID,
        "library_versions": library_versions(),
        "python_version": platform.python_version(),
        "model_sha256": digest,
        "training_data": {
            "source": source,
            "events": len(events),
            "first_event": iso_time(float(events.time.min())),
            "last_event": iso_time(float(events.time.max())),
            "cutoff": iso_time(cutoff),
            "horizon_days": horizon_days,
            "lookback_days": lookback_days,
            "users": int(y.size),
            "churners": int(y.sum()),
            "churn_rate": round(float(y.mean()), 6),
            "validation_users": int(y_val.size),
            "seed": seed,
        },
        "candidates": scores,
        "selection": (
            f"{winner} had the best validation PR-AUC ({scores[winner]['pr_auc']:.4f} against "
            f"{scores[runner_up]['pr_auc']:.4f} for {runner_up}) on {y_val.size} held-out users"
        ),
        "metrics": scores[winner],
        "risk_thresholds": thresholds,
        "tier_performance": tier_performance(y_val, p_val, thresholds),
        "value_thresholds": fit_value_thresholds(X),
        "reference_features": {name: float(v) for name, v in zip(FEATURE_NAMES, np.median(X[y == 0], axis=0))},
    }
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    (out_dir / CARD_FILE).write_text(model_card(manifest))
    return manifest


def evaluate(
    model: ChurnModel, events: EventBatch, cutoff: float, horizon_days: float, lookback_days: float | None = None
) -> dict[str, Any]:
    """Return the contract's metrics for `model` on the users known at `cutoff`."""
    lookback = lookback_days or model.manifest["training_data"].get("lookback_days", DEFAULT_LOOKBACK_DAYS)
    data = labelled_set(events, cutoff, horizon_days, lookback)
    if data.labels.size == 0:
        raise InputError("no users are known at the cutoff")
    p = model.predict_proba(data.features)
    out: dict[str, Any] = _clean(classification_metrics(data.labels, p))
    out["model_version"] = model.model_version
    out["cutoff"] = iso_time(cutoff)
    out["horizon_days"] = horizon_days
    out["tiers"] = tier_performance(data.labels, p, model.risk_thresholds)
    return out


def model_card(manifest: dict[str, Any]) -> str:
    """Return the model card in Markdown."""
    data, metrics = manifest["training_data"], manifest["metrics"]
    lines = [
        f"# Model card: {manifest['model_version']}",
        "",
        "Predicts the probability that a user has **no activity in the next "
        f"{data['horizon_days']:g} days**, from their behaviour state up to the scoring date.",
        "",
        "## Data",
        f"- Source: `{data['source']}` ({data['events']} events, {data['first_event']} to {data['last_event']})",
        f"- Cutoff {data['cutoff']}, horizon {data['horizon_days']:g} days; population: users with an event "
        f"in the {data['lookback_days']:g} days before the cutoff",
        f"- Users: {data['users']}, churners: {data['churners']} (rate {data['churn_rate']:.3f}); "
        f"{data['validation_users']} held out for validation",
        "",
        "## Candidates (validation, held-out users)",
        "",
        "| model | AUC | PR-AUC | Brier | log-loss | lift top decile |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in manifest["candidates"].items():
        mark = " **(chosen)**" if name == manifest["estimator"] else ""
        lines.append(
            f"| {name}{mark} | {m['auc']:.4f} | {m['pr_auc']:.4f} | {m['brier']:.4f} | "
            f"{m['log_loss']:.4f} | {m['lift_top_decile']:.2f} |"
        )
    lines += [
        "",
        f"Selection: {manifest['selection']}.",
        "",
        "## Risk tiers (validation)",
        "",
        "| tier | threshold | share of users | precision | recall |",
        "|---|---|---|---|---|",
    ]
    for tier, perf in manifest["tier_performance"].items():
        th = manifest["risk_thresholds"].get(tier)
        lines.append(
            f"| {tier} | {'p >= ' + format(th, 'g') if th is not None else '-'} | {perf['share']:.3f} | "
            f"{perf['precision']:.3f} | {perf['recall']:.3f} |"
        )
    vt = manifest["value_thresholds"]
    lines += [
        "",
        f"Value tiers by {vt['basis'].replace('_', ' ')}: high >= {vt['high']:.2f}, medium >= {vt['medium']:.2f}.",
        "",
        f"Chosen model: AUC {metrics['auc']:.4f}, PR-AUC {metrics['pr_auc']:.4f}, Brier {metrics['brier']:.4f}.",
        "",
        "## Limits",
        "- Trained on one customer's history at one cutoff; behaviour that changes (a new product, a",
        "  pricing change) needs retraining. Check `evaluate` on fresh data before trusting it.",
        "- Churn means no event at all in the horizon; a user who only opens an email still counts as active",
        "  if that open is sent as an event.",
        "- Users silent for longer than the lookback window were not in training; their scores extrapolate.",
        "- Probabilities are not recalibrated after training.",
        "",
        f"Libraries: {', '.join(f'{k} {v}' for k, v in manifest['library_versions'].items())}; "
        f"python {manifest['python_version']}; model.joblib sha256 `{manifest['model_sha256']}`.",
        "",
    ]
    return "\n".join(lines)
