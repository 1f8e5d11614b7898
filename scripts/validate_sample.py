"""What training on a sample of users costs in AUC, on a generated log.

Generates a year of behaviour (or takes --events), then fits the estimator the committed model uses
(histogram gradient boosting with the BG/NBD step) on the rolling origins up to the cutoff twice: once on
every user, once on the users `train --sample-users` would pick (a share of the population). Both are judged
out of time, one horizon later, on every user and on the users outside the sample. Prints a Markdown table;
asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.ingest import parse_timestamp, read_event_file  # noqa: E402
from chalicelib.scoring.events import SECONDS_PER_DAY  # noqa: E402
from churnguard_offline.generate import generate_events, write_event_log  # noqa: E402
from churnguard_offline.metrics import classification_metrics  # noqa: E402
from churnguard_offline.sampling import count_population, sampled_events, user_hash  # noqa: E402
from churnguard_offline.training import candidates, labelled_set, training_origins  # noqa: E402

ESTIMATOR = "hist_gradient_boosting"


def fit(events, cutoff: float, horizon_days: float, seed: int):
    """Return the estimator fitted on every rolling origin up to the cutoff, and its rows."""
    origins = training_origins(events, cutoff, horizon_days, 8, 60.0)
    sets = [labelled_set(events, o, horizon_days) for o in origins]
    X = np.concatenate([d.features for d in sets])
    y = np.concatenate([d.labels for d in sets])
    return candidates(seed, horizon_days)[ESTIMATOR].fit(X, y), int(y.size)


def auc(model, data, mask) -> float:
    """Return the AUC of the model on the rows of `data` in `mask`."""
    return classification_metrics(data.labels[mask], model.predict_proba(data.features[mask])[:, 1])["auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated log")
    parser.add_argument("--share", type=float, default=0.1, help="share of the population to sample")
    parser.add_argument("--events", type=Path, default=None, help="an existing log (default: generate one)")
    parser.add_argument("--cutoff", default="2026-09-02")
    parser.add_argument("--horizon-days", type=float, default=30.0)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "validate")
    args = parser.parse_args()
    path = args.events
    if path is None:
        args.work.mkdir(parents=True, exist_ok=True)
        path = args.work / f"sample-{args.users}-{args.seed}.csv.gz"
        if not path.exists():
            as_of = datetime(2026, 11, 1, tzinfo=UTC)
            write_event_log(generate_events(args.users, 365, args.seed, as_of), path)
    cutoff = parse_timestamp(args.cutoff)
    judged_at = cutoff + args.horizon_days * SECONDS_PER_DAY
    population = count_population(path, cutoff, None)
    n = round(args.share * len(population))
    started = time.monotonic()
    sample_events, _, sample = sampled_events(path, n, cutoff, None)
    read_s = time.monotonic() - started
    everyone = read_event_file(path).events
    judged = labelled_set(everyone, judged_at, args.horizon_days)
    chosen = set(sample.hashes.tolist())
    outside = np.array([user_hash(u) not in chosen for u in judged.user_ids])
    every = np.ones(outside.shape[0], dtype=bool)
    print(f"{path}: {len(population):,} users at the cutoff, sample {n:,}; both sample passes {read_s:.0f}s")
    print("| trained on | users | rows | AUC, every user | AUC, users outside the sample |")
    print("|---|---|---|---|---|")
    results = {}
    for name, events in (("every user", everyone), (f"{args.share:.0%} sample", sample_events)):
        model, rows = fit(events, cutoff, args.horizon_days, 0)  # train's default --seed
        results[name] = (auc(model, judged, every), auc(model, judged, outside))
        print(f"| {name} | {len(events.user_ids):,} | {rows:,} | {results[name][0]:.4f} | {results[name][1]:.4f} |")
    (full_all, full_out), (sample_all, sample_out) = results.values()
    print(f"\nAUC lost by the sample: {full_all - sample_all:.4f} (every user), {full_out - sample_out:.4f} (outside)")


if __name__ == "__main__":
    main()
