"""Command line: demo, generate, train, score, evaluate (see CONTRACTS in the README)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.errors import InputError, ModelArtifactError
from chalicelib.settings import ConfigError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as the contract says
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _timestamp(text: str) -> float:
    from chalicelib.ingest import parse_timestamp

    try:
        return parse_timestamp(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or date-time: {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


def _probability(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = _Parser(prog="python -m chalicelib", description="ChurnGuard: churn early warning and retention.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run the whole event path on an embedded AWS (moto)")
    demo.add_argument("--users", type=_positive_int, default=1500, help="users in the demo data (default 1500)")
    demo.add_argument("--seed", type=int, default=11)

    gen = sub.add_parser("generate", help="write a synthetic behaviour event log")
    gen.add_argument("--users", type=_positive_int, required=True)
    gen.add_argument("--days", type=_positive_int, required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--as-of", type=_timestamp, default=None, help="end of the window (default: today, UTC)")
    gen.add_argument("--kind", choices=("multi", "purchases"), default="multi", help="all signals or purchases only")
    gen.add_argument("--out", type=Path, required=True, help=".csv, .jsonl, optionally .gz")

    train = sub.add_parser("train", help="fit a model from history and write an artifact directory")
    train.add_argument("--events", type=Path, required=True)
    train.add_argument("--cutoff", type=_timestamp, required=True)
    train.add_argument("--horizon-days", type=_positive_float, required=True)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lookback-days", type=_positive_float, default=180.0, help="population: seen within this")
    train.add_argument("--max-origins", type=_positive_int, default=8, help="rolling origins, one horizon apart")
    train.add_argument(
        "--sample-users",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on N users chosen by a hash of user_id, stratified by activity (the file is read twice)",
    )
    tiers = train.add_argument_group("risk tiers (default: expected value)")
    tiers.add_argument("--tier-mode", choices=("expected_value", "capacity", "fixed"), default="expected_value")
    tiers.add_argument("--action-cost-high", type=_positive_float, default=20.0, help="cost of a high-tier action")
    tiers.add_argument("--action-cost-medium", type=_positive_float, default=8.0, help="cost of a medium-tier action")
    tiers.add_argument("--save-rate", type=_probability, default=0.2, help="share of churners an action wins back")
    tiers.add_argument("--value-at-risk", type=_positive_float, default=None, help="default: median annual spend")
    tiers.add_argument("--capacity-high", type=_probability, default=0.05, help="share of users in high (capacity)")
    tiers.add_argument("--capacity-medium", type=_probability, default=0.15, help="share in medium (capacity)")
    tiers.add_argument("--high-threshold", type=_probability, default=0.6, help="with --tier-mode fixed")
    tiers.add_argument("--medium-threshold", type=_probability, default=0.3, help="with --tier-mode fixed")

    score = sub.add_parser("score", help="score an event log offline; one CSV row per user")
    score.add_argument("--model", type=Path, default=None, help="artifact directory (default model_artifacts/)")
    score.add_argument("--input", type=Path, required=True)
    score.add_argument("--as-of", type=_timestamp, default=None, help="default: the latest event in the file")
    score.add_argument("--out", type=Path, required=True)
    score.add_argument(
        "--allow-missing-signals", action="store_true", help="score even if the file lacks event types the model uses"
    )

    rep = sub.add_parser("replay", help="retry what a run left in its dead-letter record (on the configured AWS)")
    rep.add_argument("run_id", help="the run id from the run summary, e.g. obj-… or sched-…")

    lift = sub.add_parser(
        "report", help="print win-back rates of messaged users against the holdout, with the lift (configured AWS)"
    )
    lift.add_argument("--since", type=_timestamp, default=None, help="only exposures from this date on")
    lift.add_argument("--as-of", type=_timestamp, default=None, help="judge outcomes as of this time (default now)")
    lift.add_argument("--horizon-days", type=_positive_float, default=None, help="default: the model's horizon")

    ev = sub.add_parser("evaluate", help="print model metrics on a labelled history as JSON")
    ev.add_argument("--model", type=Path, default=None)
    ev.add_argument("--events", type=Path, required=True)
    ev.add_argument("--cutoff", type=_timestamp, required=True)
    ev.add_argument("--horizon-days", type=_positive_float, required=True)
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _not_after(as_of: float | None) -> float:
    """Return the latest event time an offline read accepts: --as-of, else a day past the wall clock."""
    from chalicelib.scoring.events import SECONDS_PER_DAY

    # Without this bound a single year-9999 row would become everyone's as-of.
    return as_of if as_of is not None else time.time() + SECONDS_PER_DAY


def _read(path: Path, not_after: float | None) -> Any:
    from chalicelib.ingest import read_event_file

    _check_exists(path)
    return _reported(path, read_event_file(path, not_after=not_after))


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such file")


def _reported(path: Path, result: Any) -> Any:
    """Say how the rows of a file were accounted for, and return the read result."""
    _say(f"{path}: read {result.rows_read} rows, accepted {result.rows_accepted}, rejected {result.rows_rejected}")
    return result


def _write_rejects(result: Any, out: Path) -> None:
    if result.rows_rejected:
        path = out.with_name(out.name + ".rejected.csv")
        path.write_bytes(result.rejects.to_bytes())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.rejects.by_reason.items()))
        _say(f"{path}: {result.rows_rejected} rejected rows ({reasons})")


def _read_and_load(path: Path, not_after: float | None, model_dir: Path | None) -> tuple[Any, Any]:
    """Return (read result, model): the file is read in a worker process while this one loads the model.

    Importing scikit-learn and unpickling the model take most of a second of pure Python, as does
    reading a million rows; a thread cannot overlap them (the GIL), a second process can.
    """
    from chalicelib.ingest import read_event_file

    _check_exists(path)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = pool.submit(read_event_file, path, not_after=not_after)
        model = _model(model_dir)
        result = pending.result()
    return _reported(path, result), model


def _model(path: Path | None) -> Any:
    from chalicelib.scoring.artifact import default_model_dir, load_model
    from chalicelib.scoring.pinned_artifact import MODEL_SHA256

    # A directory named by --model is the user's to trust (loading it runs its pickle); the default is pinned.
    return load_model(path) if path else load_model(default_model_dir(), MODEL_SHA256)


def cmd_generate(args: argparse.Namespace) -> None:
    from churnguard_offline.generate import generate_events, write_event_log

    as_of = args.as_of if args.as_of is not None else _today()
    when = datetime.fromtimestamp(as_of, tz=UTC)
    batch = generate_events(args.users, args.days, args.seed, when, kind=args.kind, progress=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = write_event_log(batch, args.out, progress=True)
    _say(f"{args.out}: {rows} events for {len(batch.user_ids)} users")


def cmd_train(args: argparse.Namespace) -> None:
    from churnguard_offline.training import TierPolicy, train

    if args.medium_threshold >= args.high_threshold:
        raise InputError("--medium-threshold must be below --high-threshold")
    if args.capacity_high + args.capacity_medium >= 1:
        raise InputError("--capacity-high plus --capacity-medium must be below 1")
    policy = TierPolicy(
        mode=args.tier_mode,
        cost_high=args.action_cost_high,
        cost_medium=args.action_cost_medium,
        save_rate=args.save_rate,
        value_at_risk=args.value_at_risk,
        capacity_high=args.capacity_high,
        capacity_medium=args.capacity_medium,
        fixed={"high": args.high_threshold, "medium": args.medium_threshold},
    )
    events, sample = _training_events(args)
    started = time.monotonic()
    with _sample_too_small(args.events, sample):
        manifest = train(
            events,
            sample=sample,
            cutoff=args.cutoff,
            horizon_days=args.horizon_days,
            out_dir=args.out,
            seed=args.seed,
            policy=policy,
            lookback_days=args.lookback_days,
            max_origins=args.max_origins,
            source=args.events.name,
            progress=_say,
        )
    m = manifest["metrics"]
    _say(
        f"{args.out}: {manifest['model_version']} ({manifest['estimator']}, calibration {manifest['calibration']}) "
        f"in {time.monotonic() - started:.1f}s; {manifest['validation']['kind'].replace('_', '-')} AUC "
        f"{m['auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}"
    )
    for name, b in manifest["baselines"].items():
        _say(f"  baseline {name}: AUC {b['auc']:.4f}, PR-AUC {b['pr_auc']:.4f}, Brier {b['brier']:.4f}")


def _training_events(args: argparse.Namespace) -> tuple[Any, dict[str, Any] | None]:
    """Return (events, sample record): the whole file, or with --sample-users only the sampled users' events."""
    if args.sample_users is None:
        return _read(args.events, _not_after(None)).events, None
    from churnguard_offline.sampling import sampled_events

    _check_exists(args.events)
    events, _population, sample = sampled_events(
        args.events, args.sample_users, args.cutoff, _not_after(None), progress=True, say=_say
    )
    return events, sample.record


@contextlib.contextmanager
def _sample_too_small(path: Path, sample: dict[str, Any] | None) -> Iterator[None]:
    """Say that the sample is what is short when a sampled history has too few churners or stayers."""
    from churnguard_offline.training import TooFewExamplesError

    try:
        yield
    except TooFewExamplesError as exc:
        if sample is None or sample["users_used"] >= sample["population_users"]:
            raise
        raise InputError(
            f"{path}: {exc}, in a sample of {sample['users_used']:,} of {sample['population_users']:,} users; "
            "raise --sample-users"
        ) from exc


def cmd_score(args: argparse.Namespace) -> None:
    from chalicelib.scoring.scorer import Scorer, missing_signals, write_scores_csv
    from chalicelib.scoring.state import build_state

    result, model = _read_and_load(args.input, _not_after(args.as_of), args.model)
    events = result.events
    missing = missing_signals(model.manifest, events) if len(events) else []
    if missing and not args.allow_missing_signals:
        raise InputError(
            f"{args.input}: the model {model.model_version} was trained on logs with {', '.join(missing)} events "
            "and this file has none; its scores would read the missing signals as disengagement. Score it with a "
            "model trained on this kind of log, or pass --allow-missing-signals"
        )
    if args.as_of is not None:
        as_of = args.as_of
    elif len(events):
        as_of = float(events.time.max())
    else:
        raise InputError(f"{args.input}: no usable events, and no --as-of to score as of")
    scores = Scorer(model).score(build_state(events), as_of)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        n = write_scores_csv(scores, fh)
    _write_rejects(result, args.out)
    tiers = scores.counts()["risk_tier"]
    _say(f"{args.out}: {n} users scored as of {scores.as_of} ({', '.join(f'{k} {v}' for k, v in tiers.items())})")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from churnguard_offline.training import evaluate

    result, model = _read_and_load(args.events, _not_after(None), args.model)
    print(json.dumps(evaluate(model, result.events, args.cutoff, args.horizon_days), indent=2))


def cmd_replay(args: argparse.Namespace) -> None:
    from chalicelib import runtime

    print(json.dumps(runtime.get_pipeline().replay(args.run_id), indent=2, default=str))


def cmd_report(args: argparse.Namespace) -> None:
    from chalicelib import runtime

    report = runtime.get_pipeline().lift_report(args.since, args.as_of, args.horizon_days)
    print(json.dumps(report, indent=2))


def cmd_demo(args: argparse.Namespace) -> None:
    from churnguard_offline.demo import run_demo

    run_demo(users=args.users, seed=args.seed)


def _today() -> float:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp()


COMMANDS = {
    "demo": cmd_demo,
    "generate": cmd_generate,
    "train": cmd_train,
    "score": cmd_score,
    "evaluate": cmd_evaluate,
    "replay": cmd_replay,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command; return the exit status (0 ok, 2 usage or unusable input)."""
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (InputError, ModelArtifactError, ConfigError) as exc:
        print(f"python -m chalicelib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # A path that cannot be read or written (permissions, a directory, a full disk).
        print(f"python -m chalicelib {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return 0
