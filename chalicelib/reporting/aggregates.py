"""What a run's report is built from: counts of the users it scored, which add up over chunks, segments and shards.

Every value is a count (nested dicts of ints), so `records.add_counts` sums one chunk's into the run's totals, a
schedule segment's into its run's and a backfill shard's into its file's, exactly as the other run totals are
summed: a run split over many workers reports the same figures as one invocation would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from chalicelib.scoring.features import FEATURE_NAMES
from chalicelib.scoring.scorer import Scores

# The run totals' key of everything below but the messages, which are counted beside the runs' other message counts
# (a chunk redone after a crash finds its messages sent already, and counts them as duplicates, as those do).
AGGREGATES = "aggregates"
MESSAGES_BY_CHANNEL_ACTION = "messages_by_channel_action"
# The score histogram's buckets: 20 of equal width over [0, 1]; a probability of exactly 1 is in the last.
HISTOGRAM_BUCKETS = 20
# The segment of users scored by an artifact that predates segments.
NO_SEGMENT = "unsegmented"


def histogram_bucket(probability: np.ndarray) -> np.ndarray:
    """Return each probability's bucket, 0 .. HISTOGRAM_BUCKETS - 1."""
    return np.clip((np.asarray(probability, dtype=float) * HISTOGRAM_BUCKETS).astype(int), 0, HISTOGRAM_BUCKETS - 1)


def bin_counts(values: np.ndarray, edges: list[float]) -> dict[str, int]:
    """Return how many values fall in each bin of `edges` (numpy.searchsorted, side="right"), by bin index."""
    found = np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="right")
    counts = np.bincount(found, minlength=len(edges) + 1)
    return {str(b): int(n) for b, n in enumerate(counts.tolist()) if n}


def collect(
    scores: Scores,
    rows: list[int],
    training: dict[str, Any] | None,
    feature_names: tuple[str, ...] | list[str] = FEATURE_NAMES,
) -> dict[str, Any]:
    """Return the report's counts for users `rows` of `scores`.

    `training` is the manifest's training distribution (None: no drift bins); `feature_names` names the columns of
    `scores.features`.
    """
    idx = np.asarray(rows, dtype=int)
    out: dict[str, Any] = {"users": int(idx.size), "score_histogram": _histogram(scores.probability[idx])}
    out["drivers"] = _drivers(scores, rows)
    if training is not None and idx.size and scores.features is not None:
        out["drift_bins"] = _drift_bins(scores, idx, training, feature_names)
    return out


def _histogram(probability: np.ndarray) -> dict[str, int]:
    counts = np.bincount(histogram_bucket(probability), minlength=HISTOGRAM_BUCKETS)
    return {str(b): int(n) for b, n in enumerate(counts) if n}


def _drivers(scores: Scores, rows: list[int]) -> dict[str, dict[str, Any]]:
    """Return each at-risk user's most important reason: overall, by RFM segment and by activity cluster."""
    at_risk = [i for i in rows if scores.reasons[i]]
    top = [scores.reasons[i][0] for i in at_risk]
    segment = _names(scores.segment, at_risk)
    activity = _names(scores.activity, at_risk)
    by_segment: dict[str, Counter[str]] = {}
    by_activity: dict[str, Counter[str]] = {}
    for reason, seg, act in zip(top, segment, activity, strict=True):
        by_segment.setdefault(seg, Counter())[reason] += 1
        by_activity.setdefault(act, Counter())[reason] += 1
    return {
        "overall": dict(Counter(top)),
        "by_rfm_segment": {k: dict(v) for k, v in by_segment.items()},
        "by_activity_cluster": {k: dict(v) for k, v in by_activity.items()},
    }


def _names(values: np.ndarray | None, rows: list[int]) -> list[str]:
    """Return the segment names of `rows` (NO_SEGMENT for an artifact without segments)."""
    if values is None:
        return [NO_SEGMENT] * len(rows)
    return [str(v) for v in np.asarray(values, dtype=object)[rows].tolist()] if rows else []


def messages_by_channel_action(messages: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Return the messages claimed for sending, by channel and action code, from (channel, code) pairs."""
    out: dict[str, dict[str, int]] = {}
    for channel, code in messages:
        cell = out.setdefault(channel, {})
        cell[code] = cell.get(code, 0) + 1
    return out


def _drift_bins(
    scores: Scores, idx: np.ndarray, training: dict[str, Any], feature_names: tuple[str, ...] | list[str]
) -> dict[str, dict[str, Any]]:
    """Return the users' bin counts on the training distribution's edges: the score's and each feature's.

    Only users of the population the distribution was measured on count: those seen within its `lookback_days`
    (training keeps users active in the lookback). The long-silent users a schedule also scores would otherwise
    read as drift of recency and score however stable the active users are.
    """
    column = {name: i for i, name in enumerate(feature_names)}
    lookback = training.get("lookback_days")
    if lookback is not None and "recency_days" in column:
        idx = idx[scores.features[idx, column["recency_days"]] <= float(lookback)]
    features = scores.features[idx]
    out: dict[str, Any] = {"score": bin_counts(scores.probability[idx], training["score"]["edges"]), "features": {}}
    for name, spec in training.get("features", {}).items():
        if name in column and column[name] < features.shape[1]:
            out["features"][name] = bin_counts(features[:, column[name]], spec["edges"])
    return out
