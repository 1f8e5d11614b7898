"""Proof on data whose truth is known: the model against the true model and against buy-till-you-die baselines.

A. On logs drawn from a Pareto/NBD process (churnguard_offline.btyd_logs), `train` on the data up to an
   evaluation cutoff, `evaluate` at that cutoff on the whole log, and compare the model's AUC with the true
   model's (the generator's own Pareto/NBD) on exactly the same users. Criterion: model >= true - 0.005.
B. On purchases-only logs, train on the first twelve months (six-month horizon), evaluate at month twelve on the
   whole log. Criterion: model >= the best of eight buy-till-you-die rankings + 0.005: BG/NBD and Pareto/NBD,
   each fitted as `evaluate` fits its baselines (one horizon earlier) and at the scoring cutoff itself (they need
   no labels; `evaluate` reports those too), there on the state's counts and on purchase days (one a day at most),
   ranking by P(no purchase) and, for Pareto/NBD, by the purchases expected (`btyd_yardsticks`). Beside it, three
   ceilings on the same users say how much there is to gain: the best of `train`'s own candidates fitted on the
   scoring date's own users and labels (cross-fitted, no shift in time), from the model's features and
   buy-till-you-die columns, an estimate of what those say; the same with the raw log's month-by-month history
   beside them (`raw_history`), what a richer behaviour state could add; and the same knowing each user's hidden
   persona, which no log shows.
C. On a real purchase log, CDNOW's (23,570 customers of an online music shop, 1997-01 to 1998-06; the published
   data set of the buy-till-you-die papers, shipped by the reference implementation, a dev dependency), read
   through the contract's CSV reader: the same split and criterion as B, twelve months of history and a six-month
   horizon, one run per training seed, with B's first two ceilings. No truth is known here: C asks of a real
   shop's purchases what B asks of generated ones.

Each figure comes with a paired bootstrap standard error of the gap (users resampled, the models held fixed):
the noise of the measurement on one log, not of training. Prints a table per scenario, a verdict per
criterion, writes the figures as JSON (--out) and exits 1 when a criterion fails. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.errors import InputError  # noqa: E402
from chalicelib.ingest import read_event_file  # noqa: E402
from chalicelib.scoring.artifact import load_model  # noqa: E402
from chalicelib.scoring.btyd import BtydFeatures, btyd_inputs  # noqa: E402
from chalicelib.scoring.events import SECONDS_PER_DAY, EventBatch  # noqa: E402
from churnguard_offline.baselines import Baselines, btyd_scores  # noqa: E402
from churnguard_offline.btyd_logs import CDNOW, simulate_pareto_nbd, true_p_no_event  # noqa: E402
from churnguard_offline.generate import PERSONAS, simulate_population, users_with_events  # noqa: E402
from churnguard_offline.training import candidates, evaluate, labelled_set, population_lookback, train  # noqa: E402

END = datetime(2026, 11, 1, tzinfo=UTC)
MARGIN = 0.005
CEILING_FOLDS = 5
# The buy-till-you-die models among the baselines `evaluate` fits one horizon earlier.
BTYD_BASELINES = ("bg_nbd", "pareto_nbd")
# Scenario C: CDNOW's master log (customer id, yyyymmdd, CDs, dollars) as lifetimes ships it, and the day after
# its last date, the end of the export.
CDNOW_FILE = "CDNOW_master.txt"
CDNOW_END = datetime(1998, 7, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RunSpec:
    """One run of a scenario: the log's size and seed, the horizon, and how it is trained and measured."""

    users: int
    days: int
    horizon_days: float
    seed: int
    bootstrap_draws: int
    lookback_days: float | None  # the training population's lookback; None: train's own default


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Return the ROC AUC of scores `p` for labels `y` (ties count half), by the rank-sum; NaN with one class only."""
    from scipy.stats import rankdata

    positives = int(y.sum())
    negatives = y.size - positives
    if not positives or not negatives:
        return float("nan")
    rank_sum = float(rankdata(p)[y == 1].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def gap_standard_error(y: np.ndarray, p_model: np.ndarray, p_other: np.ndarray, draws: int, seed: int) -> float:
    """Return the bootstrap standard error of AUC(model) - AUC(other) over users resampled with replacement."""
    if draws < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(draws):
        pick = rng.integers(0, y.size, y.size)
        gaps.append(auc(y[pick], p_model[pick]) - auc(y[pick], p_other[pick]))
    return float(np.nanstd(gaps, ddof=1))


def _train_until(events: EventBatch, data_end: float, spec: RunSpec, out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Train on the events at or before `data_end` (the export ends there), the last origin one horizon earlier;
    return the loaded model and its manifest."""
    started = time.perf_counter()

    def progress(message: str) -> None:
        _log(f"    {time.perf_counter() - started:6.1f}s {message}")

    manifest = train(
        events.select(events.time <= data_end),
        cutoff=data_end - spec.horizon_days * SECONDS_PER_DAY,
        horizon_days=spec.horizon_days,
        out_dir=out_dir,
        seed=spec.seed,
        data_end=data_end,
        progress=progress,
        **({} if spec.lookback_days is None else {"lookback_days": spec.lookback_days}),
    )
    return load_model(out_dir), manifest


def _scored_users(model: Any, events: EventBatch, cutoff: float, horizon_days: float, end: float) -> Any:
    """Return the labelled set `evaluate` judges at `cutoff` with its default population: the same users."""
    return labelled_set(events, cutoff, horizon_days, population_lookback(model, "all"), end)


def _run_record(seed: int, manifest: dict[str, Any], reported: dict[str, Any], data: Any) -> dict[str, Any]:
    """Return what every run records: the seed, the population judged and the model that was trained."""
    return {
        "seed": seed,
        "n": int(data.labels.size),
        "churn_rate": round(float(data.labels.mean()), 6),
        "estimator": manifest["estimator"],
        "training_rows": manifest["training_data"]["rows"],
        "model_auc_reported": reported["auc"],
        "population": reported["population"],
    }


def pareto_run(spec: RunSpec, work: Path) -> dict[str, Any]:
    """Scenario A on one seed: the model's AUC and the true model's on the same users, and their gap."""
    end = END.timestamp()
    cut = end - spec.horizon_days * SECONDS_PER_DAY
    events, truth = simulate_pareto_nbd(spec.users, spec.days, spec.seed, END)
    _log(f"  A seed {spec.seed}: {len(events)} purchases by {spec.users} customers; training")
    model, manifest = _train_until(events, cut, spec, work)
    reported = evaluate(model, events, cut, spec.horizon_days, data_end=end)
    data = _scored_users(model, events, cut, spec.horizon_days, end)
    p_model = model.predict_proba(data.features)
    p_true = true_p_no_event(truth.params, data.values, cut, spec.horizon_days)
    model_auc, true_auc = auc(data.labels, p_model), auc(data.labels, p_true)
    return _run_record(spec.seed, manifest, reported, data) | {
        "model_auc": round(model_auc, 6),
        "true_auc": round(true_auc, 6),
        "gap": round(model_auc - true_auc, 6),
        "gap_se": round(gap_standard_error(data.labels, p_model, p_true, spec.bootstrap_draws, spec.seed), 6),
        "passed": bool(model_auc >= true_auc - MARGIN),
    }


def purchases_run(spec: RunSpec, work: Path) -> dict[str, Any]:
    """Scenario B on one seed: the model against the best buy-till-you-die ranking at month twelve."""
    end = END.timestamp()
    cut = end - spec.horizon_days * SECONDS_PER_DAY
    population = simulate_population(spec.users, spec.days, spec.seed, END, kind="purchases")
    events = users_with_events(population.batch)  # the log `generate` writes
    _log(f"  B seed {spec.seed}: {len(events)} purchases by {len(events.user_ids)} users; training")
    model, manifest = _train_until(events, cut, spec, work)
    reported = evaluate(model, events, cut, spec.horizon_days, data_end=end)
    data = _scored_users(model, events, cut, spec.horizon_days, end)
    p_model = model.predict_proba(data.features)
    judged = _against_btyd(spec, data, p_model, btyd_yardsticks(model, events, data, end), reported)
    _log(f"  B seed {spec.seed}: ceilings ({CEILING_FOLDS}-fold, on the scoring date's own users)")
    index = {user_id: i for i, user_id in enumerate(population.batch.user_ids)}
    persona = np.eye(len(PERSONAS))[population.persona[[index[user_id] for user_id in data.user_ids]]]
    inputs = ceiling_inputs(data)
    return (
        _run_record(spec.seed, manifest, reported, data)
        | judged
        | _ceiling_record(inputs, data.labels, spec.seed)
        | _ceiling_record(np.column_stack([inputs, raw_history(events, data)]), data.labels, spec.seed, "raw_log")
        | {"persona_known_auc": round(in_time_ceiling(np.column_stack([inputs, persona]), data.labels, spec.seed), 6)}
    )


def btyd_yardsticks(model: Any, events: EventBatch, data: Any, end: float) -> dict[str, np.ndarray]:
    """Return the eight buy-till-you-die rankings of `data`'s users that scenarios B and C must beat, by name.

    BG/NBD and Pareto/NBD fitted one horizon earlier, as `evaluate` fits its `baselines`, ranking by P(no purchase
    in the horizon); and both fitted at the scoring cutoff on those very users, which they may be since they learn
    no label (`evaluate`'s `baselines_at_cutoff`): once on the (x, t_x, T) the behaviour state keeps, where two
    purchases on one day are two, and once on the raw log with a customer's purchases of one day taken as one, as
    the buy-till-you-die papers count CDNOW; each by P(no purchase) and, for Pareto/NBD, also by the purchases it
    expects in the horizon (fewer first), which on real logs may rank better than the probability asked for.
    """
    earlier = _baseline_predictions(model, events, data, end)
    scores = {name: earlier[name] for name in BTYD_BASELINES}
    inputs = {"at_cutoff": btyd_inputs(data.values, data.cutoff), "days_at_cutoff": purchase_days(events, data)}
    for variant, x in inputs.items():
        scores |= {f"{name}_{variant}": p for name, p in btyd_scores(x, data.horizon_days).items()}
    return scores


def reported_btyd(reported: dict[str, Any]) -> dict[str, float]:
    """Return the buy-till-you-die AUCs `evaluate` reported, named as `btyd_yardsticks` names them."""
    earlier = {name: reported["baselines"][name]["auc"] for name in BTYD_BASELINES if name in reported["baselines"]}
    return earlier | {f"{name}_at_cutoff": figures["auc"] for name, figures in reported["baselines_at_cutoff"].items()}


def _against_btyd(
    spec: RunSpec, data: Any, p_model: np.ndarray, predictions: dict[str, np.ndarray], reported: dict[str, Any]
) -> dict[str, Any]:
    """Return the model's AUC against the best of `predictions`, the gap's standard error and the verdict.

    The rankings `evaluate` also reports must come out the same here: the proof judges what users are shown.
    """
    baselines = {name: round(auc(data.labels, p), 6) for name, p in predictions.items()}
    shown = reported_btyd(reported)
    unknown = sorted(set(shown) - set(baselines))
    if unknown:
        raise InputError(f"evaluate reported buy-till-you-die figures the proof does not compute: {unknown}")
    # Both sides round to 6 decimals; two roundings one unit apart are 1e-6 apart, give or take a float's last bit.
    differ = {name: (value, baselines[name]) for name, value in shown.items() if abs(value - baselines[name]) > 1.5e-6}
    if differ:
        raise InputError(f"evaluate's buy-till-you-die figures differ from the proof's (reported, here): {differ}")
    best = max((name for name in baselines if np.isfinite(baselines[name])), key=baselines.get)
    model_auc = auc(data.labels, p_model)
    gap_se = gap_standard_error(data.labels, p_model, predictions[best], spec.bootstrap_draws, spec.seed)
    return {
        "model_auc": round(model_auc, 6),
        "baselines_auc": baselines,
        "baselines_auc_reported": shown,
        "best_baseline": best,
        "gap": round(model_auc - baselines[best], 6),
        "gap_se": round(gap_se, 6),
        "passed": bool(model_auc >= baselines[best] + MARGIN),
    }


def ceiling_inputs(data: Any) -> np.ndarray:
    """Return what the model reads of `data`'s users: their features and the buy-till-you-die columns."""
    return BtydFeatures(data.horizon_days).fit(data.features).transform(data.features)


def in_time_ceilings(X: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, float]:
    """Return the AUC of each candidate `train` chooses from, with train's own settings, fitted on rows X and their
    own labels and cross-fitted over CEILING_FOLDS folds (no row is scored by a fold that saw its label), by name.

    X already holds the buy-till-you-die columns (`ceiling_inputs`), so each candidate's own step that adds them is
    left out. No candidate wins everywhere: on CDNOW's 23,570 customers logistic regression generalises better
    than boosting, on generated logs the forest or boosting may.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(CEILING_FOLDS, shuffle=True, random_state=seed)
    learners = {name: _without_btyd_step(pipeline) for name, pipeline in candidates(seed).items()}
    return {
        name: auc(labels, cross_val_predict(learner, X, labels, cv=folds, method="predict_proba")[:, 1])
        for name, learner in learners.items()
    }


def _without_btyd_step(pipeline: Any) -> Any:
    """Return `pipeline` without its step that adds the buy-till-you-die columns (the inputs hold them already)."""
    from sklearn.pipeline import Pipeline

    steps = [step for step in pipeline.steps if step[0] != "btyd"]
    if len(steps) != len(pipeline.steps) - 1:
        raise InputError(f"a candidate of train has not exactly one btyd step: {[name for name, _ in pipeline.steps]}")
    return Pipeline(steps)


def _best(figures: dict[str, float]) -> float:
    """Return the highest of `figures` that is a number, or NaN when none is (say, labels of one class)."""
    finite = [value for value in figures.values() if np.isfinite(value)]
    return max(finite) if finite else float("nan")


def in_time_ceiling(X: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Return the best of `in_time_ceilings`.

    On the model's inputs (`ceiling_inputs`) at the very users and date it is judged on, scored in time, it
    estimates what `train`'s candidates can get out of those inputs with no shift between training and scoring.
    It is an estimate, not a bound: each fold learns from 80% of one date's users, and a model trained on a whole
    earlier date may do better. Columns of per-user truth that no log holds, added to X, show what knowing them
    would be worth.
    """
    return _best(in_time_ceilings(X, labels, seed))


def _ceiling_record(X: np.ndarray, labels: np.ndarray, seed: int, name: str = "in_time") -> dict[str, Any]:
    """Return a ceiling's figures for a run, as `{name}_ceiling_auc` (the best candidate's AUC) and
    `{name}_ceiling_by_learner` (each candidate's): the in-time ceiling on the model's inputs, or another on X."""
    by_learner = {learner: round(value, 6) for learner, value in in_time_ceilings(X, labels, seed).items()}
    return {f"{name}_ceiling_auc": _best(by_learner), f"{name}_ceiling_by_learner": by_learner}


def _baseline_predictions(model: Any, events: EventBatch, data: Any, end: float) -> dict[str, np.ndarray]:
    """Return every baseline's predictions for `data`, by name, fitted one horizon earlier as `evaluate` fits them."""
    earlier = data.cutoff - data.horizon_days * SECONDS_PER_DAY
    fit_set = labelled_set(events, earlier, data.horizon_days, population_lookback(model, "all"), end)
    fitted = Baselines().fit(fit_set.values, fit_set.features, fit_set.labels, fit_set.cutoff, fit_set.horizon_days)
    return fitted.predict(data.values, data.features, data.cutoff)


def purchase_days(events: EventBatch, data: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (x, t_x, T) in days for `data`'s users from `events` up to their cutoff, one purchase a day at most.

    x counts the days with a purchase after the first, t_x is the last such day's distance from the first, T the
    cutoff's; the days are UTC days, as CDNOW's dates are.
    """
    before = events.time <= data.cutoff
    day = np.floor(events.time[before] / SECONDS_PER_DAY).astype(np.int64)
    user = events.user_index[before].astype(np.int64)
    user, day = np.unique(np.column_stack([user, day]), axis=0).T
    n_users = len(events.user_ids)
    days = np.bincount(user, minlength=n_users)
    first = np.full(n_users, np.iinfo(np.int64).max)
    last = np.full(n_users, np.iinfo(np.int64).min)
    np.minimum.at(first, user, day)
    np.maximum.at(last, user, day)
    rows = _judged_rows(events, data)
    if (days[rows] == 0).any():
        raise InputError("a judged user has no purchase up to the cutoff")
    x = (days[rows] - 1).astype(np.float64)
    return x, (last[rows] - first[rows]).astype(np.float64), data.cutoff / SECONDS_PER_DAY - first[rows]


# The raw log's history as the raw-log ceiling reads it: months of 30.5 days back from the cutoff, the oldest
# bin taking everything earlier.
HISTORY_BINS = 12
BIN_DAYS = 30.5


def _judged_rows(events: EventBatch, data: Any) -> np.ndarray:
    """Return the index into `events.user_ids` of each of `data`'s users, in `data`'s order."""
    index = {user_id: i for i, user_id in enumerate(events.user_ids)}
    return np.array([index[user_id] for user_id in data.user_ids], dtype=np.int64)


def raw_history(events: EventBatch, data: Any) -> np.ndarray:
    """Return, for `data`'s users, what the raw log up to their cutoff holds beyond the behaviour state's summary.

    Per month back from the cutoff (HISTORY_BINS of BIN_DAYS, the oldest open-ended; an event exactly a month
    back counts in the older): events, UTC days with an event (a day straddling two months counts in the older)
    and the value summed (amounts netted, a net below 0 taken as 0); then the first day's value, the days with an
    event, and the mean, spread, longest and latest gap between those days. Every column is log1p of a count, an
    amount or days, so no learner is thrown by a heavy tail. Purchases-only logs (scenarios B and C) hold
    purchases and their amounts, nothing else, and here every event counts whatever its type.
    """
    before = events.time <= data.cutoff
    user = events.user_index[before].astype(np.int64)
    age = (data.cutoff - events.time[before]) / SECONDS_PER_DAY
    value = np.nan_to_num(events.value[before])
    n_users, bins = len(events.user_ids), HISTORY_BINS
    cell = user * bins + np.minimum(age // BIN_DAYS, bins - 1).astype(np.int64)
    counts = np.bincount(cell, minlength=n_users * bins).reshape(n_users, bins)
    spend = np.bincount(cell, weights=value, minlength=n_users * bins).reshape(n_users, bins)
    day = np.floor(events.time[before] / SECONDS_PER_DAY).astype(np.int64)
    pairs, of_pair = np.unique(np.column_stack([user, day]), axis=0, return_inverse=True)
    day_user, day_number = pairs.T
    # A day that straddles two months counts in the older, its earliest event's, whatever the rows' order.
    day_cell = np.zeros(len(pairs), dtype=np.int64)
    np.maximum.at(day_cell, of_pair.ravel(), cell)
    days = np.bincount(day_cell, minlength=n_users * bins).reshape(n_users, bins)
    first_day = np.full(n_users, np.iinfo(np.int64).max)
    np.minimum.at(first_day, day_user, day_number)
    on_first_day = day == first_day[user]
    first_value = np.bincount(user[on_first_day], weights=value[on_first_day], minlength=n_users)
    rhythm = _day_gaps(day_user, day_number, n_users)
    rows = _judged_rows(events, data)
    columns = [counts[rows], days[rows], spend[rows], first_value[rows, None], days[rows].sum(1, keepdims=True)]
    return np.log1p(np.maximum(np.column_stack([*columns, rhythm[rows]]), 0.0))


def _day_gaps(day_user: np.ndarray, day_number: np.ndarray, n_users: int) -> np.ndarray:
    """Return per user the mean, standard deviation, maximum and latest gap in days between days with an event,
    all 0 for a user with one such day; (day_user, day_number) are unique pairs sorted by user, then day."""
    repeat = np.flatnonzero(day_user[1:] == day_user[:-1])
    gap_user = day_user[1:][repeat]
    gap = (day_number[1:] - day_number[:-1])[repeat].astype(np.float64)
    n = np.bincount(gap_user, minlength=n_users)
    total = np.bincount(gap_user, weights=gap, minlength=n_users)
    mean = total / np.maximum(n, 1)
    square = np.bincount(gap_user, weights=gap * gap, minlength=n_users) / np.maximum(n, 1)
    longest = np.zeros(n_users)
    np.maximum.at(longest, gap_user, gap)
    latest = np.zeros(n_users)
    last_of_user = np.flatnonzero(np.diff(gap_user, append=-1))  # user ids are >= 0: the last gap differs from -1
    latest[gap_user[last_of_user]] = gap[last_of_user]
    return np.column_stack([mean, np.sqrt(np.maximum(square - mean * mean, 0.0)), longest, latest])


def cdnow_source() -> Path:
    """Return the path of CDNOW's master log in the installed reference implementation (no import needed)."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("scenario cdnow needs the lifetimes package (requirements-dev.txt: make install)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / CDNOW_FILE
    if not path.is_file():
        raise InputError(f"{path}: no such file; scenario cdnow reads CDNOW's master log from lifetimes' datasets")
    return path


def cdnow_log(source: Path, users: int | None, work: Path) -> tuple[EventBatch, dict[str, Any]]:
    """Return CDNOW's purchases as the contract's reader reads them, and its row counts.

    Each line of the master log (customer, date, CDs, dollars) becomes a purchase row of a behaviour CSV: the
    date as the event time, the dollars as the value. `users` keeps that many customers drawn at random (seed 0,
    the same ones for every training seed); None keeps them all.
    """
    with source.open() as raw:
        header, *lines = [line.split() for line in raw if line.strip()]
    if header != ["customer_id", "date", "number_of_cds", "dollar_value"] or any(len(line) != 4 for line in lines):
        raise InputError(f"{source}: not CDNOW's master log (customer_id date number_of_cds dollar_value)")
    customers = sorted({line[0] for line in lines})
    if users is not None and users < len(customers):
        kept = set(np.random.default_rng(0).choice(customers, users, replace=False).tolist())
        lines = [line for line in lines if line[0] in kept]
    path = work / "cdnow.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["user_id", "event_time", "event_type", "value"])
        for customer, day, _cds, dollars in lines:
            writer.writerow([customer, f"{day[:4]}-{day[4:6]}-{day[6:]}", "purchase", dollars])
    read = read_event_file(path)
    return read.events, read.row_counts()


def cdnow_run(spec: RunSpec, work: Path) -> dict[str, Any]:
    """Scenario C on one training seed: the model against buy-till-you-die on CDNOW's real purchases."""
    end = CDNOW_END.timestamp()
    cut = end - spec.horizon_days * SECONDS_PER_DAY
    events, rows = cdnow_log(cdnow_source(), spec.users, work)
    _log(
        f"  C seed {spec.seed}: {rows['scored']} purchases by {len(events.user_ids)} customers "
        f"({rows['rejected']} rows rejected); training"
    )
    model, manifest = _train_until(events, cut, spec, work / "model")
    reported = evaluate(model, events, cut, spec.horizon_days, data_end=end)
    data = _scored_users(model, events, cut, spec.horizon_days, end)
    p_model = model.predict_proba(data.features)
    judged = _against_btyd(spec, data, p_model, btyd_yardsticks(model, events, data, end), reported)
    _log(f"  C seed {spec.seed}: ceilings ({CEILING_FOLDS}-fold, on the scoring date's own users)")
    inputs = ceiling_inputs(data)
    return (
        _run_record(spec.seed, manifest, reported, data)
        | {"rows": rows}
        | judged
        | _ceiling_record(inputs, data.labels, spec.seed)
        | _ceiling_record(np.column_stack([inputs, raw_history(events, data)]), data.labels, spec.seed, "raw_log")
    )


# What scenarios B and C are judged against (btyd_yardsticks), in words.
_YARDSTICKS = (
    "max(bg_nbd, pareto_nbd AUC; fitted one horizon earlier or at the cutoff, there on the state's counts or on"
    " purchase days, by P(none) or expected purchases)"
)
# Each scenario: the function that runs it on one seed, and its criterion in words.
SCENARIOS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {
    "pareto_nbd": (pareto_run, "model AUC >= true model AUC - 0.005 on every seed"),
    "purchases": (purchases_run, f"model AUC >= {_YARDSTICKS} + 0.005 on every seed"),
    "cdnow": (cdnow_run, f"model AUC >= {_YARDSTICKS} + 0.005 on every seed"),
}


def _compared(name: str, run: dict[str, Any]) -> str:
    """Return the AUC the model is compared with in one run, and what it is where that is not obvious."""
    if name == "pareto_nbd":
        return f"{run['true_auc']:.4f}"
    return f"{run['baselines_auc'][run['best_baseline']]:.4f} ({run['best_baseline']})"


# The ceilings each scenario measures beside its criterion, as (JSON field, column heading).
_CEILINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "pareto_nbd": (),
    "purchases": (
        ("in_time_ceiling_auc", "in-time ceiling"),
        ("raw_log_ceiling_auc", "raw-log ceiling"),
        ("persona_known_auc", "persona known"),
    ),
    "cdnow": (("in_time_ceiling_auc", "in-time ceiling"), ("raw_log_ceiling_auc", "raw-log ceiling")),
}


def _table(name: str, runs: list[dict[str, Any]]) -> str:
    """Return one scenario's runs as a Markdown table."""
    other = "true" if name == "pareto_nbd" else "best BTYD"
    ceilings = _CEILINGS[name]
    lines = [
        f"| seed | users | churn rate | model AUC | {other} AUC | gap | gap s.e. | passed |"
        + "".join(f" {heading} |" for _, heading in ceilings),
        "|---:|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(ceilings),
    ]
    for run in runs:
        lines.append(
            f"| {run['seed']} | {run['n']} | {run['churn_rate']:.3f} | {run['model_auc']:.4f} | "
            f"{_compared(name, run)} | {run['gap']:+.4f} | {run['gap_se']:.4f} | {'yes' if run['passed'] else 'NO'} |"
            + "".join(f" {run[field]:.4f} |" for field, _ in ceilings)
        )
    return "\n".join(lines)


def prove(args: argparse.Namespace) -> dict[str, Any]:
    """Run every chosen scenario over every seed; return the figures and verdicts."""
    users = {"pareto_nbd": args.users_pareto, "purchases": args.users_purchases, "cdnow": args.users_cdnow}
    horizons = {
        "pareto_nbd": args.horizon_days,
        "purchases": args.purchases_horizon_days,
        "cdnow": args.purchases_horizon_days,
    }
    out: dict[str, Any] = {
        "settings": {
            "days": args.days,
            "end": END.isoformat(),
            "seeds": args.seeds,
            "users": {name: users[name] or "all" for name in args.scenarios},
            "horizon_days": {name: horizons[name] for name in args.scenarios},
            "lookback_days": args.lookback_days or "train's default",
            "bootstrap_draws": args.bootstrap,
            "margin": MARGIN,
            "true_params_days": CDNOW.model_params(),
        },
        "scenarios": {},
    }
    for name in args.scenarios:
        run, criterion = SCENARIOS[name]
        _log(f"scenario {name}: {users[name] or 'all'} users, horizon {horizons[name]:g} days")
        runs = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as work:
                spec = RunSpec(users[name], args.days, horizons[name], seed, args.bootstrap, args.lookback_days)
                runs.append(run(spec, Path(work)))
            _log(f"  seed {seed}: model {runs[-1]['model_auc']:.4f}, gap {runs[-1]['gap']:+.4f}")
        out["scenarios"][name] = {
            "criterion": criterion,
            "passed": all(r["passed"] for r in runs),
            "mean_gap": round(float(np.mean([r["gap"] for r in runs])), 6),
            "runs": runs,
        }
    out["passed"] = all(s["passed"] for s in out["scenarios"].values())
    return out


def _print(figures: dict[str, Any]) -> None:
    """Print each scenario's table and verdict, then the overall verdict."""
    for name, scenario in figures["scenarios"].items():
        print(f"\n{name}: {scenario['criterion']}\n")
        print(_table(name, scenario["runs"]))
        print(f"\n{'PASS' if scenario['passed'] else 'FAIL'}: mean gap {scenario['mean_gap']:+.4f}")
    print(f"\noverall: {'PASS' if figures['passed'] else 'FAIL'}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds of the generated logs")
    parser.add_argument("--scenarios", nargs="+", choices=tuple(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--users-pareto", type=_positive, default=20_000, help="customers of each Pareto/NBD log")
    parser.add_argument("--users-purchases", type=_positive, default=20_000, help="users of each purchases log")
    parser.add_argument(
        "--users-cdnow", type=_positive, default=None, help="CDNOW customers drawn at random (default: all 23,570)"
    )
    parser.add_argument("--days", type=_positive, default=548, help="days of each generated log (ending 2026-11-01)")
    parser.add_argument("--horizon-days", type=_positive, default=90, help="scenario A's horizon")
    parser.add_argument("--purchases-horizon-days", type=_positive, default=182, help="scenarios B's and C's horizon")
    parser.add_argument("--lookback-days", type=_positive, default=None, help="train's lookback (default: train's)")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws for the gap's s.e. (0: none)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the proof; return 0 when every criterion holds, 1 when one fails, 2 when the input is unusable."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        figures = prove(args)
    except InputError as exc:
        _log(f"prove_model: {exc}")
        return 2
    figures["seconds"] = round(time.perf_counter() - started, 1)
    _print(figures)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        _log(f"wrote {args.out}")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
