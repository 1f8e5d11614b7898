"""Training and evaluation from a customer's own history: features to a cutoff, churn after it."""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.errors import InputError
from chalicelib.scoring.artifact import MANIFEST_FILE, MODEL_FILE, ChurnModel, library_versions, sha256_of
from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY, EventBatch
from chalicelib.scoring.features import FEATURE_NAMES, compute_features
from chalicelib.scoring.model_version import decision_sha256, model_version
from chalicelib.scoring.scorer import iso_time
from chalicelib.scoring.segments import fit_segments
from chalicelib.scoring.state import LAYOUT_ID, build_state, col
from chalicelib.scoring.tiers import capacity_thresholds, expected_value_thresholds, fit_value_thresholds
from chalicelib.settings import DEFAULT_RETENTION_DAYS
from churnguard_offline.distribution import training_distribution
from churnguard_offline.metrics import classification_metrics, json_ready, ranking_metrics, tier_performance
from churnguard_offline.progress import each
from churnguard_offline.small_data import (
    TrainingMode,
    btyd_candidates,
    check_judgeable,
    selection_text,
    training_mode,
)

if TYPE_CHECKING:
    from chalicelib.scoring.btyd import BtydFit

# Training keeps every user the schedule scores (seen within RETENTION_DAYS), so no scored user lies outside what
# the model learned from; "active" users, seen within ACTIVE_DAYS, are the population retention teams act on most.
DEFAULT_LOOKBACK_DAYS = float(DEFAULT_RETENTION_DAYS)
ACTIVE_DAYS = 180.0
# How much out-of-time AUC a calibration may cost and still be kept (its folds' refits move the order a little).
CALIBRATION_AUC_SLACK = 0.005
# Whom `evaluate` judges the model on: all users the schedule scores (the default), or the active it trained on.
POPULATIONS = ("all", "active")
DEFAULT_THRESHOLDS = {"high": 0.6, "medium": 0.3}
# Features and labels of one set of rows.
Data = tuple[np.ndarray, np.ndarray]


@dataclass
class LabelledSet:
    """Users known at the cutoff, their features at the cutoff and whether they churned after it."""

    user_ids: list[str]
    features: np.ndarray
    labels: np.ndarray  # 1 = no event in (cutoff, cutoff + horizon]
    cutoff: float
    horizon_days: float
    values: np.ndarray  # the users' behaviour state rows at the cutoff (baselines read them)


def labelled_set(
    events: EventBatch,
    cutoff: float,
    horizon_days: float,
    lookback_days: float = DEFAULT_LOOKBACK_DAYS,
    data_end: float | None = None,
) -> LabelledSet:
    """Build features from events at or before `cutoff` and labels from the horizon after it.

    The population is users with an event in the `lookback_days` before the cutoff (by default every user the
    schedule still scores; metrics on it include long-silent users, easy churners, so the model card reports the
    active users apart).

    The horizon must lie within the data: before `data_end` (the export's end, when the caller knows it), else
    within a day of the last event. A sparse log's quiet last days are data too, which only `data_end` can say.
    """
    if len(events) == 0:
        raise InputError("the event log holds no usable events")
    end = cutoff + horizon_days * SECONDS_PER_DAY
    last = float(events.time.max())
    if data_end is not None and last > data_end:
        raise InputError(
            f"an event at {iso_time(last)} is after --data-end {iso_time(data_end)} (a date alone means 00:00 UTC "
            "of that day: for an export whose last day is D, give the day after D)"
        )
    known_until = data_end if data_end is not None else last + SECONDS_PER_DAY
    if end > known_until:
        where = f"the data's end, --data-end {iso_time(data_end)}" if data_end is not None else None
        raise InputError(
            f"the horizon ends {iso_time(end)}, after {where or f'the last event ({iso_time(last)})'}; "
            "use an earlier --cutoff or a shorter --horizon-days"
            + ("" if data_end is not None else ", or --data-end DATE if the export runs past its last event")
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
        values=state.values[keep],
    )


def candidates(seed: int, horizon_days: float = 30.0, btyd: BtydFit | None = None) -> dict[str, Any]:
    """Return the candidate pipelines: buy-till-you-die features appended to the behaviour features, then a
    classifier. `btyd`, the buy-till-you-die models already fitted on the rows the pipelines will fit, is shared
    by them all instead of being fitted in each."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from chalicelib.scoring.btyd import BtydFeatures

    def btyd_step() -> tuple[str, Any]:
        return ("btyd", BtydFeatures(horizon_days=horizon_days, fitted=btyd))

    return {
        "logistic_regression": Pipeline(
            [btyd_step(), ("scale", StandardScaler()), ("clf", LogisticRegression(C=0.5, max_iter=3000))]
        ),
        "random_forest": Pipeline(
            [
                btyd_step(),
                (
                    "clf",
                    RandomForestClassifier(
                        n_estimators=150, min_samples_leaf=30, max_features="sqrt", n_jobs=2, random_state=seed
                    ),
                ),
            ]
        ),
        "hist_gradient_boosting": Pipeline(
            [
                btyd_step(),
                (
                    "clf",
                    HistGradientBoostingClassifier(
                        # Measured: as good as 0.05 / 31 leaves out of time, at a third of the trees,
                        # and scoring time (reasons need several predictions per user) follows trees.
                        learning_rate=0.15,
                        max_iter=400,
                        max_leaf_nodes=15,
                        min_samples_leaf=40,
                        l2_regularization=1.0,
                        early_stopping=True,
                        validation_fraction=0.15,
                        n_iter_no_change=20,
                        random_state=seed,
                    ),
                ),
            ]
        ),
    }


def _pool(seed: int, horizon_days: float, mode: TrainingMode, btyd: BtydFit | None = None) -> dict[str, Any]:
    """Return the candidates the training mode lets compete: learned ones, buy-till-you-die ones, or both."""
    learned = candidates(seed, horizon_days, btyd) if mode.learned else {}
    return learned | btyd_candidates(mode.btyd_models, horizon_days, btyd)


def _btyd_fit(X: np.ndarray, progress: Callable[[str], None]) -> BtydFit:
    """Fit the buy-till-you-die models once on the rows every candidate and calibration fold will learn from.

    They are unsupervised, so a calibration fold's pipeline may take the fit of all the rows: it sees no label
    of the fold it is calibrated on. Fitted in each pipeline instead, Pareto/NBD was ten fits a training, the
    baseline's aside.
    """
    from chalicelib.scoring.btyd import BtydFit

    progress(f"fitting BG/NBD and Pareto/NBD on {len(X)} rows")
    return BtydFit.on(X)


def _clean(metrics: dict[str, float]) -> dict[str, float]:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}


def training_origins(
    events: EventBatch, cutoff: float, horizon_days: float, max_origins: int, min_history_days: float
) -> list[float]:
    """Return cutoffs for rolling-origin training, latest first: cutoff, cutoff - horizon, ...

    An origin needs `min_history_days` of data before it, so its features describe real behaviour.
    """
    start = float(events.time.min())
    step = horizon_days * SECONDS_PER_DAY
    origins = []
    for k in range(max_origins):
        origin = cutoff - k * step
        if origin - start < min_history_days * SECONDS_PER_DAY:
            break
        origins.append(origin)
    return origins or [cutoff]


@dataclass
class TierPolicy:
    """How risk-tier thresholds are chosen: expected value (default), capacity, or fixed numbers."""

    mode: str = "expected_value"
    cost_high: float = 20.0  # a person-led or generous action
    cost_medium: float = 8.0  # an automated message with an offer, plus the fatigue it causes
    save_rate: float = 0.2  # share of contacted would-be churners an action wins back
    value_at_risk: float | None = None  # None: learned as the median annual spend of paying users
    capacity_high: float = 0.05
    capacity_medium: float = 0.15
    fixed: dict[str, float] | None = None

    def thresholds(self, p_val: np.ndarray, features: np.ndarray) -> tuple[dict[str, float], dict[str, Any]]:
        """Return (thresholds, the inputs that produced them) for the manifest."""
        if self.mode == "fixed":
            return dict(self.fixed or DEFAULT_THRESHOLDS), {"mode": "fixed"}
        if self.mode == "capacity":
            inputs = {"mode": "capacity", "high_share": self.capacity_high, "medium_share": self.capacity_medium}
            return capacity_thresholds(p_val, self.capacity_high, self.capacity_medium), inputs
        value, basis = self.value_at_risk, "given"
        if value is None:
            value, basis = annual_value(features)
        inputs = {
            "mode": "expected_value",
            "cost_high": self.cost_high,
            "cost_medium": self.cost_medium,
            "save_rate": self.save_rate,
            "value_at_risk": round(value, 2),
            "value_at_risk_basis": basis,
        }
        return expected_value_thresholds(self.cost_high, self.cost_medium, value, self.save_rate), inputs


def annual_value(features: np.ndarray) -> tuple[float, str]:
    """Return the median yearly net spend of paying users (what a churner takes away) and its basis."""
    spend = np.expm1(features[:, FEATURE_NAMES.index("log_net_spend")])
    tenure = np.maximum(features[:, FEATURE_NAMES.index("tenure_days")], 30.0)
    paying = spend > 0
    if paying.sum() < 20:
        return 100.0, "default (too few paying users)"
    return float(np.median(spend[paying] / tenure[paying] * 365.0)), "median annual net spend of paying users"


def _stack(sets: list[LabelledSet]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([d.features for d in sets]), np.concatenate([d.labels for d in sets])


def _calibrated(estimator: Any, method: str) -> Any:
    from sklearn.calibration import CalibratedClassifierCV

    return CalibratedClassifierCV(estimator, method=method, cv=3)


@dataclass
class _Choice:
    """The candidate chosen out of time, fitted on the earlier origins, and the scores that chose it."""

    winner: str
    runner_up: str
    model: Any  # the winner as fitted on the fit origins, calibrated when that helped
    calibration_method: str
    calibration: dict[str, float]  # out-of-time Brier score by calibration method
    calibration_auc: dict[str, float]  # out-of-time AUC by calibration method
    scores: dict[str, dict[str, float]]  # out-of-time metrics of every candidate, before calibration
    mode: TrainingMode  # which candidates competed, and why


@dataclass
class _Judgement:
    """How the chosen model does at the validation origin, against the baselines, and its risk thresholds."""

    p_val: np.ndarray
    metrics: dict[str, float]
    baseline_p: dict[str, np.ndarray]
    baselines: dict[str, dict[str, float]]
    thresholds: dict[str, float]
    tier_inputs: dict[str, Any]
    importance: dict[str, float]


def train(
    events: EventBatch,
    *,
    cutoff: float,
    horizon_days: float,
    out_dir: Path,
    seed: int = 0,
    policy: TierPolicy | None = None,
    lookback_days: float = DEFAULT_LOOKBACK_DAYS,
    max_origins: int = 8,
    min_history_days: float = 60.0,
    source: str = "",
    sample: dict[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
    data_end: float | None = None,
) -> dict[str, Any]:
    """Fit candidates on earlier origins, choose and calibrate out of time, write the artifact; return its manifest.

    `sample` is the record of the users `events` were sampled to (`churnguard_offline.sampling`), if they were;
    `data_end` is when the export ends (labelled_set).
    """
    from churnguard_offline.model_card import write_model_card

    policy = policy or TierPolicy()
    sets = _origin_sets(events, cutoff, horizon_days, lookback_days, max_origins, min_history_days, progress, data_end)
    validation, history = _split_out_of_time(sets, seed)
    out_of_time = validation.cutoff > history[0].cutoff
    fit = _stack(history)
    mode = training_mode(fit[1], out_of_time=out_of_time, sampled=_subsampled(sample))
    choice = _choose(fit, (validation.features, validation.labels), seed, horizon_days, progress, mode)
    judged = _judge(choice, validation, history[0], policy, seed, progress)
    final, rows = _refit(choice, sets, seed, horizon_days, progress)
    digest = _save_model(final, out_dir)
    manifest: dict[str, Any] = {
        **_identity(choice, digest),
        "training_data": _training_data(
            events,
            sets,
            rows,
            source=source,
            cutoff=cutoff,
            horizon_days=horizon_days,
            lookback_days=lookback_days,
            seed=seed,
        )
        | ({"sample": sample} if sample else {}),
        "validation": _validation_record(validation, history),
        "metrics_by_population": population_metrics(validation, judged.p_val),
        "candidates": choice.scores,
        "selection": _selection_text(choice, validation, out_of_time),
        "training_mode": mode.record(),
        **_evidence(choice, judged, validation, sets[0], seed),
        "training_distribution": _distribution(final, sets[0], lookback_days, progress),
    }
    _set_version(manifest)
    (out_dir / MANIFEST_FILE).write_text(json.dumps(json_ready(manifest), indent=2, allow_nan=False) + "\n")
    progress("writing the model card and plots")
    write_model_card(out_dir, manifest, validation.labels, judged.p_val, judged.baseline_p)
    return manifest


def _origin_sets(
    events: EventBatch,
    cutoff: float,
    horizon_days: float,
    lookback_days: float,
    max_origins: int,
    min_history_days: float,
    progress: Callable[[str], None],
    data_end: float | None = None,
) -> list[LabelledSet]:
    """Return the labelled set at each training origin, latest first, after checking the latest is learnable."""
    if len(events) == 0:
        raise InputError("the event log holds no usable events")
    origins = training_origins(events, cutoff, horizon_days, max_origins, min_history_days)
    progress(
        f"building features and labels at {len(origins)} origin(s): {', '.join(iso_time(o)[:10] for o in origins)}"
    )
    counted = each(progress, origins, len(origins), "origin")
    sets = [labelled_set(events, origin, horizon_days, lookback_days, data_end) for origin in counted]
    check_judgeable(sets[0].labels, f"at the cutoff {iso_time(cutoff)[:10]}")
    return sets


def _subsampled(sample: dict[str, Any] | None) -> bool:
    """Return whether the events are a sample of fewer users than the log holds."""
    return bool(sample) and sample["users_used"] < sample["population_users"]


def _choose(
    fit: Data, val: Data, seed: int, horizon_days: float, progress: Callable[[str], None], mode: TrainingMode
) -> _Choice:
    """Fit every candidate on `fit`, rank them on `val` and calibrate the winner when that helps out of time."""
    pool = partial(_pool, seed, horizon_days, mode, _btyd_fit(fit[0], progress))
    scores, fitted = _fit_candidates(fit, val, pool, progress)
    winner, runner_up = _rank(scores)
    model, method, (brier, auc) = _calibrate(winner, (fitted[winner], scores[winner]), fit, val, pool, progress)
    return _Choice(winner, runner_up, model, method, brier, auc, scores, mode)


def _judge(
    choice: _Choice,
    validation: LabelledSet,
    earliest_fit: LabelledSet,
    policy: TierPolicy,
    seed: int,
    progress: Callable[[str], None],
) -> _Judgement:
    """Measure the chosen model and the baselines at the validation origin and set the risk thresholds."""
    X_val, y_val = validation.features, validation.labels
    p_val = choice.model.predict_proba(X_val)[:, 1]
    metrics = _clean(classification_metrics(y_val, p_val))
    out_of_time = validation.cutoff > earliest_fit.cutoff
    baseline_p = _baseline_predictions(earliest_fit, validation) if out_of_time else {}
    baselines = {name: _clean(classification_metrics(y_val, p)) for name, p in baseline_p.items()}
    thresholds, tier_inputs = policy.thresholds(p_val, validation.features)
    progress("measuring feature importance")
    importance = _importance(_thread_neutral(choice.model), X_val, y_val, seed)
    return _Judgement(p_val, metrics, baseline_p, baselines, thresholds, tier_inputs, importance)


def _refit(
    choice: _Choice, sets: list[LabelledSet], seed: int, horizon_days: float, progress: Callable[[str], None]
) -> tuple[Any, int]:
    """Refit the winner, calibrated as chosen, on every origin; return the model and the rows it was fitted on."""
    X_all, y_all = _stack(sets)
    btyd = _btyd_fit(X_all, progress)
    progress(f"refitting {choice.winner} on all {y_all.size} rows")
    final = _pool(seed, horizon_days, choice.mode, btyd)[choice.winner]
    if choice.calibration_method != "none":
        final = _calibrated(final, choice.calibration_method)
    final.fit(X_all, y_all)
    return final, int(y_all.size)


def _save_model(model: Any, out_dir: Path) -> str:
    """Write the model into the artifact directory and return its sha256."""
    import joblib

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE
    joblib.dump(_thread_neutral(model), model_path, compress=3)
    return sha256_of(model_path)


def _thread_neutral(model: Any) -> Any:
    """Return `model` with every fitted bin mapper's thread count, and every forest's n_jobs, back at their
    defaults (None: decided at use, and one thread).

    Histogram gradient boosting keeps the OpenMP thread count it was fitted with in its bin mapper, and
    nothing else of it: without this, the same training on one core and on two gives other model bytes,
    and so another version, for the same predictions.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper

    pending, seen = [model], set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, RandomForestClassifier):
            # Fitted on two threads, a forest would predict through joblib's pool too, whose polling took
            # two thirds of each prediction of a few hundred users (permutation importance, reason effects).
            node.n_jobs = None
        if isinstance(node, _BinMapper):
            node.n_threads = None
        elif isinstance(node, list | tuple):
            pending.extend(node)
        elif isinstance(node, dict):
            pending.extend(node.values())
        elif type(node).__module__.startswith(("sklearn.", "chalicelib.")) and hasattr(node, "__dict__"):
            pending.extend(vars(node).values())
    return model


def _identity(choice: _Choice, digest: str) -> dict[str, Any]:
    """Return the manifest fields that name the model and what it needs to load and score.

    The version and the decision hash are placeholders here: `_set_version` fills them in once every field
    they cover is in the manifest.
    """
    return {
        "model_version": "",
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "estimator": choice.winner,
        "calibration": choice.calibration_method,
        "feature_names": list(FEATURE_NAMES),
        "state_layout": LAYOUT_ID,
        "library_versions": library_versions(),
        "python_version": platform.python_version(),
        "model_sha256": digest,
        "decision_sha256": "",
    }


def _set_version(manifest: dict[str, Any]) -> None:
    """Set model_version and decision_sha256 from the model's sha256 and the manifest's decision fields.

    No clock goes in: the same data, arguments and libraries give the same model bytes and so the same version.
    """
    manifest["decision_sha256"] = decision_sha256(manifest)
    manifest["model_version"] = model_version(manifest)


def _distribution(
    final: Any, latest: LabelledSet, lookback_days: float, progress: Callable[[str], None]
) -> dict[str, Any]:
    """Return the training distribution of the latest origin's users, scored by the final (deployed) model.

    One origin, not all of them stacked: a scoring run is one snapshot of users, and the stacked origins
    differ from each other (users age, trends move), so a mix of seven months would read as drift even on
    training data. The latest origin is the one nearest deployment, and the one the model was judged on
    out of time. `cutoff` and `lookback_days` say which users they are, so drift can compare like with like.
    """
    progress(f"measuring the training distribution on {latest.labels.size} users at {iso_time(latest.cutoff)[:10]}")
    scores = final.predict_proba(latest.features)[:, 1]
    return {
        **training_distribution(latest.features, scores, FEATURE_NAMES),
        "cutoff": iso_time(latest.cutoff),
        "lookback_days": lookback_days,
    }


def _training_data(
    events: EventBatch,
    sets: list[LabelledSet],
    rows: int,
    *,
    source: str,
    cutoff: float,
    horizon_days: float,
    lookback_days: float,
    seed: int,
) -> dict[str, Any]:
    """Return the manifest's description of the data the model learned from."""
    latest = sets[0]
    return {
        "source": source,
        "events": len(events),
        "first_event": iso_time(float(events.time.min())),
        "last_event": iso_time(float(events.time.max())),
        "cutoff": iso_time(cutoff),
        "horizon_days": horizon_days,
        "lookback_days": lookback_days,
        "origins": [_origin_record(d) for d in sets],
        "rows": rows,
        "users": int(latest.labels.size),
        "churners": int(latest.labels.sum()),
        "churn_rate": round(float(latest.labels.mean()), 6),
        "event_type_shares": _type_shares(events),
        "seed": seed,
    }


def population_metrics(data: LabelledSet, p: np.ndarray) -> dict[str, dict[str, Any]]:
    """Return the metrics of `p` over all of `data`'s users and over the active ones (seen within ACTIVE_DAYS).

    A model trained on everyone could lean on the long-silent, who are easy: the active share says whether it
    still ranks the users whose fate is open.
    """
    active = data.values[:, col("last_seen")] >= data.cutoff - ACTIVE_DAYS * SECONDS_PER_DAY
    out: dict[str, dict[str, Any]] = {}
    for name, rows, days in (("all", np.ones(active.size, dtype=bool), None), ("active", active, ACTIVE_DAYS)):
        labels = data.labels[rows]
        record: dict[str, Any] = {"seen_within_days": days, "n": int(rows.sum())}
        if 0 < labels.sum() < labels.size:
            record |= _clean(classification_metrics(labels, p[rows]))
        out[name] = record
    return out


def _validation_record(validation: LabelledSet, history: list[LabelledSet]) -> dict[str, Any]:
    """Return the manifest's description of how the candidates were judged."""
    return {
        "kind": "out_of_time" if validation.cutoff > history[0].cutoff else "held_out_users",
        "fit_origins": sorted({iso_time(d.cutoff) for d in history}),
        "cutoff": iso_time(validation.cutoff),
        "users": int(validation.labels.size),
        "churn_rate": round(float(validation.labels.mean()), 6),
    }


def _selection_text(choice: _Choice, validation: LabelledSet, out_of_time: bool) -> str:
    """Return one sentence saying why the winner was chosen, on a later origin or on held-out users."""
    scores, winner, runner_up = choice.scores, choice.winner, choice.runner_up
    if not runner_up:
        return selection_text(choice.mode, winner)
    how = "out-of-time" if out_of_time else "held-out-user"
    best, next_best = scores[winner]["pr_auc"], scores[runner_up]["pr_auc"]
    # A lead is shown at the digits where it lies; an exact tie is said to be one.
    tie, digits = "", 6 if best != next_best and f"{best:.4f}" == f"{next_best:.4f}" else 4
    if best == next_best:
        broken = scores[winner]["brier"] != scores[runner_up]["brier"]
        tie = " (a tie, broken by the lower Brier score)" if broken else " (a tie, in Brier score too)"
    return (
        f"{winner} had the best {how} PR-AUC ({best:.{digits}f} against {next_best:.{digits}f} for {runner_up})"
        f"{tie} on {validation.labels.size} users at {iso_time(validation.cutoff)[:10]}"
    )


def _evidence(
    choice: _Choice, judged: _Judgement, validation: LabelledSet, latest: LabelledSet, seed: int
) -> dict[str, Any]:
    """Return the manifest fields of quality, thresholds and the reference data scoring compares against."""
    return {
        "calibration_brier": choice.calibration,
        "calibration_auc": choice.calibration_auc,
        "metrics": judged.metrics,
        "baselines": judged.baselines,
        "risk_thresholds": judged.thresholds,
        "tier_policy": judged.tier_inputs,
        "tier_performance": tier_performance(validation.labels, judged.p_val, judged.thresholds),
        "value_thresholds": fit_value_thresholds(latest.features),
        "segments": fit_segments(latest.features, seed),
        "reference_features": {
            name: float(v) for name, v in zip(FEATURE_NAMES, np.median(latest.features[latest.labels == 0], axis=0))
        },
        "feature_importance": judged.importance,
    }


def _fit_candidates(
    fit: Data, val: Data, pool: Callable[[], dict[str, Any]], progress: Callable[[str], None]
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Fit every candidate of `pool()` on `fit`; return their out-of-time metrics on `val` and the fitted models."""
    scores: dict[str, dict[str, float]] = {}
    fitted: dict[str, Any] = {}
    for name, pipeline in pool().items():
        progress(f"fitting {name} on {len(fit[1])} rows")
        fitted[name] = pipeline.fit(*fit)
        scores[name] = _clean(classification_metrics(val[1], pipeline.predict_proba(val[0])[:, 1]))
    return scores, fitted


def _rank(scores: dict[str, dict[str, float]]) -> tuple[str, str]:
    """Return the winning candidate and the runner-up.

    PR-AUC decides: retention teams act on the top of the ranking, where PR-AUC looks.
    """
    winner = max(scores, key=lambda n: (scores[n]["pr_auc"], -scores[n]["brier"]))
    runner_up = max((n for n in scores if n != winner), key=lambda n: scores[n]["pr_auc"], default="")
    return winner, runner_up


def _calibrate(
    winner: str,
    uncalibrated: tuple[Any, dict[str, float]],
    fit: Data,
    val: Data,
    pool: Callable[[], dict[str, Any]],
    progress: Callable[[str], None],
) -> tuple[Any, str, tuple[dict[str, float], dict[str, float]]]:
    """Return the model to use, its calibration method and each method's out-of-time Brier score and AUC.

    `uncalibrated` is the fitted winner and its out-of-time metrics. Calibrate only when it makes the
    probabilities better out of time (lower Brier score) without costing the ranking more than
    CALIBRATION_AUC_SLACK of AUC: calibration is meant to leave the order alone, and on a weak model a sigmoid
    fitted on folds can turn it upside down (AUC 0.55 to 0.45) for a slightly lower Brier score.
    """
    chosen_model, calibration_method = uncalibrated[0], "none"
    calibration = {"none": uncalibrated[1]["brier"]}
    auc = {"none": uncalibrated[1]["auc"]}
    floor = uncalibrated[1]["auc"] - CALIBRATION_AUC_SLACK
    for method in ("sigmoid", "isotonic"):
        progress(f"calibrating {winner} ({method})")
        model = _calibrated(pool()[winner], method).fit(*fit)
        p = model.predict_proba(val[0])[:, 1]
        calibration[method] = round(float(np.mean((p - val[1]) ** 2)), 6)
        auc[method] = round(ranking_metrics(val[1], p)["auc"], 6)
        keeps_order = not np.isfinite(floor) or auc[method] >= floor
        if calibration[method] < calibration[calibration_method] and keeps_order:
            chosen_model, calibration_method = model, method
    return chosen_model, calibration_method, (calibration, auc)


def _origin_record(data: LabelledSet) -> dict[str, Any]:
    return {
        "cutoff": iso_time(data.cutoff),
        "users": int(data.labels.size),
        "churn_rate": round(float(data.labels.mean()), 6),
    }


def _split_out_of_time(sets: list[LabelledSet], seed: int) -> tuple[LabelledSet, list[LabelledSet]]:
    """Return (validation, fit sets): the latest origin validates models fitted on the earlier ones.

    With a single origin there is no earlier time to fit on; then a quarter of its users is held out, and since
    those are all the judging rests on, they must hold enough churners and stayers (check_judgeable).
    """
    if len(sets) > 1:
        return sets[0], sets[1:]
    from sklearn.model_selection import train_test_split

    data = sets[0]
    fit, val = train_test_split(np.arange(data.labels.size), test_size=0.25, stratify=data.labels, random_state=seed)
    part = lambda idx: LabelledSet(  # noqa: E731 - a local shorthand
        [data.user_ids[i] for i in idx],
        data.features[idx],
        data.labels[idx],
        data.cutoff,
        data.horizon_days,
        data.values[idx],
    )
    check_judgeable(data.labels[val], "in the quarter of the users held out to judge on (one origin only)")
    return part(val), [part(fit)]


def _baseline_predictions(fit_set: LabelledSet, eval_set: LabelledSet) -> dict[str, np.ndarray]:
    """Fit the baselines on an earlier origin and return their probabilities at the evaluation origin."""
    from churnguard_offline.baselines import Baselines

    fitted = Baselines().fit(fit_set.values, fit_set.features, fit_set.labels, fit_set.cutoff, fit_set.horizon_days)
    return fitted.predict(eval_set.values, eval_set.features, eval_set.cutoff)


# Rows of the validation set permutation importance shuffles (drawn once, at random, from larger sets).
IMPORTANCE_ROWS = 5000


def _importance(model: Any, X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    """Return permutation importance (fall in PR-AUC when a feature is shuffled), largest first.

    The rows are drawn here rather than by scikit-learn's `max_samples`, which scores the unshuffled model on
    every row but each shuffle on a sample: PR-AUC differs between the two, so every feature, even one that is
    always zero, was shifted by the same few thousandths.
    """
    from sklearn.inspection import permutation_importance

    if len(y) > IMPORTANCE_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(len(y), IMPORTANCE_ROWS, replace=False))
        X, y = X[rows], y[rows]
    result = permutation_importance(model, X, y, scoring="average_precision", n_repeats=3, random_state=seed)
    order = np.argsort(-result.importances_mean)
    return {FEATURE_NAMES[i]: round(float(result.importances_mean[i]), 6) for i in order}


def _type_shares(events: EventBatch) -> dict[str, float]:
    counts = np.bincount(events.type_code.astype(np.int64), minlength=len(EVENT_TYPES))
    return {t: round(float(c / max(len(events), 1)), 6) for t, c in zip(EVENT_TYPES, counts) if c}


def population_lookback(model: ChurnModel, population: str, retention_days: float = DEFAULT_RETENTION_DAYS) -> float:
    """Return the days a user may have been silent at the cutoff and still be in `population`.

    `all` is whom the schedule scores: every user it still knows (RETENTION_DAYS, 730 by default), and by default
    whom the model was trained on. `active` is users seen within ACTIVE_DAYS (180).
    """
    if population == "all":
        return float(retention_days)
    if population == "active":
        return ACTIVE_DAYS
    raise InputError(f"population must be one of {', '.join(POPULATIONS)}, not {population!r}")


def _baselines_unfit(fit_set: LabelledSet | None, population: str) -> str | None:
    """Return why the baselines cannot be fitted one horizon before the cutoff, or None when they can."""
    if fit_set is None:
        return "no history before cutoff - horizon to fit baselines on"
    churners = int(fit_set.labels.sum())
    if fit_set.labels.size == 0:
        return f"no user of the population ({population}) at cutoff - horizon to fit baselines on"
    if churners in (0, fit_set.labels.size):
        return (
            f"at cutoff - horizon, {churners} of the {fit_set.labels.size} users churned: "
            "baselines need churners and stayers to fit on"
        )
    return None


def evaluate(
    model: ChurnModel,
    events: EventBatch,
    cutoff: float,
    horizon_days: float,
    population: str = "all",
    data_end: float | None = None,
) -> dict[str, Any]:
    """Return the contract's metrics for `model` at `cutoff` over `population`, with baselines fitted one horizon
    earlier on the same population, and the buy-till-you-die ones also fitted at the cutoff on the judged users'
    own history (they read no label)."""
    from churnguard_offline.baselines import AT_CUTOFF_NAMES, evaluate_at_cutoff, evaluate_baselines

    lookback = population_lookback(model, population)
    data = labelled_set(events, cutoff, horizon_days, lookback, data_end)
    if data.labels.size == 0:
        known = int(np.unique(events.user_index[events.time <= cutoff]).size)
        raise InputError(
            f"none of the {known:,} user{'s' if known != 1 else ''} known at the cutoff was seen within {lookback:g} "
            "days of it "
            f"(--population {population})"
        )
    churners = int(data.labels.sum())
    if churners in (0, data.labels.size):
        stayers = data.labels.size - churners
        raise InputError(
            f"of the {data.labels.size:,} users judged at the cutoff, {churners:,} churned in the horizon and "
            f"{stayers:,} stayed: AUC and PR-AUC need both; pick another --cutoff or --horizon-days"
        )
    p = model.predict_proba(data.features)
    out: dict[str, Any] = _clean(classification_metrics(data.labels, p))
    out["model_version"] = model.model_version
    out["population"] = {"name": population, "seen_within_days": lookback}
    out["cutoff"] = iso_time(cutoff)
    out["horizon_days"] = horizon_days
    out["tiers"] = tier_performance(data.labels, p, model.risk_thresholds)
    earlier = cutoff - horizon_days * SECONDS_PER_DAY
    fit_set = labelled_set(events, earlier, horizon_days, lookback, data_end) if events.time.min() < earlier else None
    unfit = _baselines_unfit(fit_set, population)
    if unfit:
        out["baselines"] = {}
        out["baselines_note"] = unfit
    else:
        out["baselines"] = {name: _clean(m) for name, m in evaluate_baselines(fit_set, data).items()}
        out["baselines_fitted_at"] = iso_time(earlier)
    out["baselines_at_cutoff"] = {name: _clean(m) for name, m in evaluate_at_cutoff(data).items()}
    missing = [name for name in AT_CUTOFF_NAMES if name not in out["baselines_at_cutoff"]]
    if missing:
        out["baselines_at_cutoff_note"] = f"no finite fit at the cutoff for {', '.join(missing)}"
    return out
