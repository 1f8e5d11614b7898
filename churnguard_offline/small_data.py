"""Small customers: which models may compete, decided by how many churners and stayers there are to fit on.

A learned model needs examples of both outcomes; a buy-till-you-die (BTYD) model needs none, only each user's
event timing. So the smaller class among the rows the candidates are fitted on (before the validation origin)
sets the training mode:

- below `LEARNED_MIN_CLASS_ROWS` (50): `btyd_only`. No learned model; BG/NBD and Pareto/NBD alone, chosen out of
  time when there are two origins or more, else the standard one, Pareto/NBD (see `btyd_models`);
- below `MIXED_BELOW` (2,500): `mixed`. The learned candidates and the BTYD ones compete as candidates always do,
  so a small log keeps a learned model only when it beats a four-parameter BTYD model on later behaviour;
- from 2,500: `learned`, the learned candidates alone, as for every large log.

Below `MIN_JUDGED_ROWS` (5) of a class, at the cutoff or in the rows to fit on, nothing can be judged: training
refuses, naming the counts, rather than deploy a model whose quality nobody measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from chalicelib.errors import InputError

if TYPE_CHECKING:
    from chalicelib.scoring.btyd import BtydFit

# Below this many churners or stayers to fit on, no learned model is fitted (the wall `train` had before).
LEARNED_MIN_CLASS_ROWS = 50
# Below this many, BTYD models compete with the learned ones. Measured on generated purchase logs (seed 5, a 30-day
# horizon, eight origins): Pareto/NBD beat every learned candidate out of time with 531 and 1,148 churners to fit on
# (PR-AUC 0.654 against 0.638, 0.733 against 0.725), logistic regression beat it with 2,749 (0.756 against 0.741).
# At 300, the 671-user log would have had the weaker learned model; the committed model has 35,000 churners to fit on.
MIXED_BELOW = 2500
# Fewer than this many churners or stayers leave nothing to judge a model on (and the 3-fold calibration
# needs a few of each class per fold).
MIN_JUDGED_ROWS = 5
# The BTYD model taken when there is no later origin to choose on: Pareto/NBD lets a customer drop out at any
# time, also before a repeat event, which is what churn is; BG/NBD keeps every user without a repeat alive.
STANDARD_BTYD = "pareto_nbd"
BTYD_NAMES = {"bg_nbd": "BG/NBD", "pareto_nbd": "Pareto/NBD"}


class TooFewExamplesError(InputError):
    """Too few churners or stayers to learn from (a sample can be too small even when the log is not)."""


@dataclass(frozen=True)
class TrainingMode:
    """Which candidates compete, and why: the counts that decided it."""

    mode: str  # btyd_only | mixed | learned
    churners: int
    stayers: int
    out_of_time: bool  # the candidates are judged at a later origin than they were fitted on
    btyd_models: tuple[str, ...]  # the BTYD candidates (none in learned mode)

    @property
    def learned(self) -> bool:
        """Whether learned candidates compete."""
        return self.mode != "btyd_only"

    def reason(self) -> str:
        """Return one sentence: the counts, the thresholds they fell between, and what competed."""
        counts = f"{self.churners} churners and {self.stayers} stayers to fit on"
        if self.mode == "learned":
            return f"{counts}, at least {MIXED_BELOW:,} of each: the learned candidates alone"
        if self.mode == "mixed":
            return (
                f"{counts}, fewer than {MIXED_BELOW:,} of one: the learned candidates competed with "
                f"{_names(self.btyd_models)}, so a learned model is kept only when it does better {self._judged()}"
            )
        return f"{counts}, fewer than {LEARNED_MIN_CLASS_ROWS} of one: too few for a learned model; {self._btyd()}"

    def record(self) -> dict[str, Any]:
        """Return the manifest's `training_mode`."""
        return {
            "mode": self.mode,
            "reason": self.reason(),
            "churners": self.churners,
            "stayers": self.stayers,
            "counted": "the rows the candidates are fitted on, before the validation origin",
            "btyd_candidates": list(self.btyd_models),
            "thresholds": {
                "learned_min_per_class": LEARNED_MIN_CLASS_ROWS,
                "btyd_competes_below_per_class": MIXED_BELOW,
                "judged_min_per_class": MIN_JUDGED_ROWS,
            },
        }

    def _judged(self) -> str:
        return "out of time" if self.out_of_time else "on held-out users"

    def _btyd(self) -> str:
        if len(self.btyd_models) > 1:
            return f"the better of {_names(self.btyd_models)} out of time, alone"
        return (
            f"{BTYD_NAMES[self.btyd_models[0]]} alone, the standard buy-till-you-die model: with a single origin "
            "there is no later behaviour to choose between BG/NBD and Pareto/NBD on"
        )


def _names(models: tuple[str, ...]) -> str:
    return " and ".join(BTYD_NAMES[m] for m in models)


def btyd_models(out_of_time: bool) -> tuple[str, ...]:
    """Return the BTYD candidates: both when judged at a later origin, else the standard one.

    Held-out users at the fitting origin measure how well each fits that moment, not what holds later, and on
    a small log their few churners cannot tell apart two models that differ by thousandths of AUC.
    """
    return ("bg_nbd", "pareto_nbd") if out_of_time else (STANDARD_BTYD,)


def check_judgeable(labels: np.ndarray, where: str) -> None:
    """Raise TooFewExamplesError when there are too few churners or stayers for any model to be judged."""
    churners, stayers = _counts(labels)
    if min(churners, stayers) < MIN_JUDGED_ROWS:
        raise TooFewExamplesError(
            f"too few examples to judge a model {where}: {churners} churners and {stayers} stayers among "
            f"{labels.size} rows (need at least {MIN_JUDGED_ROWS} of each; a shorter --horizon-days gives more "
            "churners, a longer one more stayers)"
        )


def training_mode(fit_labels: np.ndarray, *, out_of_time: bool, sampled: bool = False) -> TrainingMode:
    """Return the mode the rows to fit on allow; raise TooFewExamplesError below the floor.

    A sample (`sampled`) that is too small for a learned model is refused instead: the log is not small, the
    sample is, and a larger --sample-users is the answer.
    """
    check_judgeable(fit_labels, "in the rows to fit on")
    churners, stayers = _counts(fit_labels)
    fewest = min(churners, stayers)
    if fewest < LEARNED_MIN_CLASS_ROWS and sampled:
        raise TooFewExamplesError(
            f"too few examples to learn from: {churners} churners and {stayers} stayers among {fit_labels.size} "
            f"rows (need at least {LEARNED_MIN_CLASS_ROWS} of each)"
        )
    if fewest < LEARNED_MIN_CLASS_ROWS:
        mode = "btyd_only"
    elif fewest < MIXED_BELOW:
        mode = "mixed"
    else:
        mode = "learned"
    models = () if mode == "learned" else btyd_models(out_of_time)
    return TrainingMode(mode, churners, stayers, out_of_time, models)


def btyd_candidates(models: tuple[str, ...], horizon_days: float, btyd: BtydFit | None = None) -> dict[str, Any]:
    """Return the BTYD-only candidates, unfitted, by name; `btyd`, a BtydFit of the rows they will fit, saves
    fitting again."""
    from chalicelib.scoring.btyd_model import BtydClassifier

    return {name: BtydClassifier(model=name, horizon_days=horizon_days, fitted=btyd) for name in models}


def selection_text(mode: TrainingMode, winner: str) -> str:
    """Return why `winner` was taken when it had nothing to compete with."""
    return f"{BTYD_NAMES.get(winner, winner)} was the only candidate ({mode.reason()})"


def mode_warning(manifest: dict[str, Any]) -> str | None:
    """Return what `train` warns of when the log was too small for the learned candidates alone, else None."""
    record = manifest.get("training_mode") or {}
    if record.get("mode") == "btyd_only":
        return f"a buy-till-you-die model alone ({manifest['estimator']}): {record['reason']}"
    if record.get("mode") == "mixed":
        return f"a small log, {manifest['estimator']} chosen: {record['reason']}"
    return None


def _counts(labels: np.ndarray) -> tuple[int, int]:
    churners = int(np.asarray(labels).sum())
    return churners, int(np.asarray(labels).size - churners)
