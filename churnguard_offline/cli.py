"""Command line: demo, generate, train, score, evaluate (see CONTRACTS in the README)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from chalicelib import __version__
from chalicelib.errors import InputError, ModelArtifactError
from chalicelib.lookup.tier_index import TIERS
from chalicelib.settings import DEFAULT_RETENTION_DAYS, ConfigError
from churnguard_offline.arguments import DefaultsFormatter, unknown_option
from churnguard_offline.progress import Steps
from churnguard_offline.report import FORMATS as REPORT_FORMATS
from churnguard_offline.stage import add_stage_option, aws_usage_errors, stage_environment

EXIT_USAGE = 2
# The name the commands go by in their help and errors: the module's, or the console script's (console()).
DEFAULT_PROG = "python -m chalicelib"
# Users scored at a time by `score`: one step of its progress, and a bound on the memory of one step's features.
SCORE_CHUNK_USERS = 50_000
# What `report` never reaches: it reads exposures and outcomes, and sends no message.
REPORT_UNUSED = ("QUEUE_HIGH", "QUEUE_MEDIUM")
# A run id as the runs write it (obj-…, sched-…, their parts): what may go into an S3 key.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


class _Parser(argparse.ArgumentParser):
    """Every flag's help shows its default; flags are never abbreviated, and an unknown one is named."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        # An abbreviation that works today breaks the day a flag with the same start is added.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Parse as argparse does, after naming the first unknown flag (before a required one is found missing)."""
        args = sys.argv[1:] if args is None else list(args)
        unknown = unknown_option(self, args)
        if unknown:
            self.error(unknown)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:  # one line, exit 2, as the contract says
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


def _run_id(text: str) -> str:
    if not _RUN_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a run id: {text[:80]!r}")
    return text


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="say nothing of the steps, only the result lines (default: off)"
    )


def build_parser(prog: str = DEFAULT_PROG) -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = _Parser(prog=prog, description="ChurnGuard: churn early warning and retention.")
    parser.add_argument("--version", action="version", version=f"churnguard {__version__}", help="print the version")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="run the whole event path on an embedded AWS (moto)")
    demo.add_argument("--users", type=_positive_int, default=1500, help="users in the demo data")
    demo.add_argument("--seed", type=int, default=11, help="seed of the demo data")

    gen = sub.add_parser("generate", help="write a synthetic behaviour event log")
    gen.add_argument("--users", type=_positive_int, required=True, help="users to simulate")
    gen.add_argument("--days", type=_positive_int, required=True, help="days of history, ending at --as-of")
    gen.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same file")
    gen.add_argument("--as-of", type=_timestamp, default=None, help="end of the window (default: today, UTC)")
    gen.add_argument(
        "--kind",
        choices=("multi", "purchases", "pareto_nbd"),  # generate.KINDS, without importing numpy to parse
        default="multi",
        help="all signals, purchases only, or purchases of a Pareto/NBD process with CDNOW's parameters",
    )
    gen.add_argument("--out", type=Path, required=True, help="the event log to write: .csv or .jsonl, optionally .gz")

    train = sub.add_parser("train", help="fit a model from history and write an artifact directory")
    train.add_argument("--events", type=Path, required=True, help="the behaviour event log to learn from")
    train.add_argument(
        "--cutoff", type=_timestamp, required=True, help="the latest training origin: features up to it, labels after"
    )
    train.add_argument(
        "--horizon-days", type=_positive_float, required=True, help="churn = no event within this many days"
    )
    train.add_argument("--out", type=Path, required=True, help="the artifact directory to write")
    train.add_argument("--seed", type=int, default=0, help="random seed of the candidates and the split")
    train.add_argument(
        "--lookback-days",
        type=_positive_float,
        default=float(DEFAULT_RETENTION_DAYS),
        help="population: users seen within this many days of an origin (default: all the schedule scores)",
    )
    train.add_argument("--max-origins", type=_positive_int, default=8, help="rolling origins, one horizon apart")
    _data_end_option(train)
    train.add_argument(
        "--sample-users",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on N users chosen by a hash of user_id, stratified by activity (the file is read twice) "
        "(default: every user)",
    )
    _add_quiet(train)
    tiers = train.add_argument_group("risk tiers (default: expected value)")
    tiers.add_argument(
        "--tier-mode",
        choices=("expected_value", "capacity", "fixed"),
        default="expected_value",
        help="how the risk thresholds are set: by the value of acting, by team capacity, or as given",
    )
    tiers.add_argument("--action-cost-high", type=_positive_float, default=20.0, help="cost of a high-tier action")
    tiers.add_argument("--action-cost-medium", type=_positive_float, default=8.0, help="cost of a medium-tier action")
    tiers.add_argument("--save-rate", type=_probability, default=0.2, help="share of churners an action wins back")
    tiers.add_argument(
        "--value-at-risk",
        type=_positive_float,
        default=None,
        help="value of a saved churner (default: median annual spend)",
    )
    tiers.add_argument("--capacity-high", type=_probability, default=0.05, help="share of users in high (capacity)")
    tiers.add_argument("--capacity-medium", type=_probability, default=0.15, help="share in medium (capacity)")
    tiers.add_argument("--high-threshold", type=_probability, default=0.6, help="high from here (--tier-mode fixed)")
    tiers.add_argument(
        "--medium-threshold", type=_probability, default=0.3, help="medium from here (--tier-mode fixed)"
    )

    score = sub.add_parser("score", help="score an event log offline; one CSV row per user")
    score.add_argument(
        "--model", type=Path, default=None, help="artifact directory (default: the pinned model_artifacts/)"
    )
    score.add_argument("--input", type=Path, required=True, help="the behaviour event log to score")
    score.add_argument(
        "--as-of", type=_timestamp, default=None, help="score as of this time (default: the latest event in the file)"
    )
    score.add_argument("--out", type=Path, required=True, help="the score CSV to write, one row per user")
    score.add_argument(
        "--allow-missing-signals",
        action="store_true",
        help="score even if the file lacks event types the model uses (default: refuse)",
    )
    _add_quiet(score)

    rep = sub.add_parser("replay", help="retry what a run left in its dead-letter record (on the configured AWS)")
    rep.add_argument("run_id", type=_run_id, help="the run id from the run summary, e.g. obj-… or sched-…")
    add_stage_option(rep)

    lift = sub.add_parser(
        "report", help="print win-back rates of messaged users against the holdout, with the lift (configured AWS)"
    )
    lift.add_argument(
        "--since", type=_timestamp, default=None, help="only exposures from this date on (default: every exposure)"
    )
    lift.add_argument("--as-of", type=_timestamp, default=None, help="judge outcomes as of this time (default: now)")
    lift.add_argument(
        "--horizon-days",
        type=_positive_float,
        default=None,
        help="days a win-back is judged over (default: the model's horizon)",
    )
    lift.add_argument(
        "--format",
        choices=REPORT_FORMATS,
        default=REPORT_FORMATS[0],
        help="json: the lift report with the latest run report under run_report; html, md: the run report",
    )
    lift.add_argument("--out", type=Path, default=None, help="write the report to this file (default: stdout)")
    add_stage_option(lift)

    export = sub.add_parser(
        "export", help="write every current user of a risk x value tier pair to a CSV for a CRM upload (configured AWS)"
    )
    export.add_argument("--risk-tier", choices=TIERS, required=True, help="the users' risk tier")
    export.add_argument("--value-tier", choices=TIERS, required=True, help="the users' value tier")
    export.add_argument("--out", type=Path, required=True, help="the CSV to write (replaced once complete)")
    add_stage_option(export)

    ev = sub.add_parser("evaluate", help="print model metrics on a labelled history as JSON")
    ev.add_argument(
        "--model", type=Path, default=None, help="artifact directory (default: the pinned model_artifacts/)"
    )
    ev.add_argument("--events", type=Path, required=True, help="a labelled history: events past the cutoff")
    ev.add_argument("--cutoff", type=_timestamp, required=True, help="features up to this time, labels after")
    ev.add_argument(
        "--horizon-days", type=_positive_float, required=True, help="churn = no event within this many days"
    )
    ev.add_argument(
        "--population",
        choices=("all", "active"),
        default="all",
        help="all: every user the schedule scores (seen within RETENTION_DAYS, 730); active: those seen within the"
        " last 180 days",
    )
    _data_end_option(ev)
    return parser


def _data_end_option(command: argparse.ArgumentParser) -> None:
    """Add --data-end: when the export ends, so a quiet last day still counts as data."""
    command.add_argument(
        "--data-end",
        type=_timestamp,
        default=None,
        help="when the export ends (a date alone: 00:00 UTC, so the day after its last day); a horizon may reach"
        " it even if its last days are quiet (default: a day past the last event)",
    )


def _say(message: str) -> None:
    # On a terminal the step that runs may be shown on the line (progress.Steps): the message takes its place.
    print(f"\r\x1b[K{message}" if sys.stderr.isatty() else message, file=sys.stderr, flush=True)


def _not_after(as_of: float | None) -> float:
    """Return the latest event time an offline read accepts: --as-of, else a day past the wall clock."""
    from chalicelib.scoring.events import SECONDS_PER_DAY

    # Without this bound a single year-9999 row would become everyone's as-of.
    return as_of if as_of is not None else time.time() + SECONDS_PER_DAY


def _read(path: Path, not_after: float | None, steps: Steps | None = None) -> Any:
    """Return the read of a file (as read_event_file reads it), its bytes counted on the bar of `steps`, if given."""
    from chalicelib.errors import UnreadableFileError
    from chalicelib.ingest import read_events

    _check_exists(path)
    try:
        with open(path, "rb") as raw, steps.reading(raw) if steps else contextlib.nullcontext(raw) as stream:
            return _reported(path, read_events(stream, str(path), not_after=not_after))
    except OSError as exc:  # as read_event_file: a directory, no permission, or a disk that fails mid-file
        raise UnreadableFileError(str(path), f"cannot read: {exc.strerror or exc}") from exc


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: no such file")


def _reported(path: Path, result: Any) -> Any:
    """Say how the rows of a file were accounted for, and return the read result."""
    _say(f"{path}: read {result.rows_read} rows, accepted {result.rows_accepted}, rejected {result.rows_rejected}")
    return result


# How every reject file this code writes begins (chalicelib.ingest.rejects.RejectWriter.COLUMNS).
REJECTS_HEADER = b"line,reason,detail,"


def rejects_path(out: Path, source: Path) -> Path:
    """Return where the rejected rows of a command writing `out` from `source` go: beside `out`, never inside it.

    Refused when something other than an earlier run's rejects is there (the input itself, a user's file, a link,
    a directory): the command may replace that file, or remove it when no row is rejected.
    """
    out = Path(os.path.abspath(out))  # `--out .` or `x/..` names its directory only once normalised
    if not out.name:
        raise InputError(f"{out}: --out must name a file or directory below {out}")
    path = out.with_name(out.name + ".rejected.csv")
    if os.path.lexists(path) and not _own_rejects(path, source):
        raise InputError(
            f"{path}: already there and not the rejects of an earlier run; the rejected rows of {source} are "
            "written there, so move it or choose another --out"
        )
    return path


def _own_rejects(path: Path, source: Path) -> bool:
    """Return whether `path` is a regular file this command wrote: a reject CSV, and not the input itself."""
    if path.is_symlink() or not path.is_file() or (source.exists() and path.samefile(source)):
        return False
    with open(path, "rb") as existing:
        return existing.read(len(REJECTS_HEADER)) == REJECTS_HEADER


def _write_rejects(result: Any, path: Path) -> None:
    """Write the rejected rows to `path` (rejects_path), or remove an earlier run's there: it would speak for this
    file."""
    if result.rejects.write_to(path):
        _say(f"{path}: {result.rejects.summary()}")


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
    from churnguard_offline.small_data import mode_warning
    from churnguard_offline.training import TierPolicy, train

    if args.medium_threshold >= args.high_threshold:
        raise InputError("--medium-threshold must be below --high-threshold")
    if args.capacity_high + args.capacity_medium >= 1:
        raise InputError("--capacity-high plus --capacity-medium must be below 1")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: exists and is not a directory; --out is the artifact's directory")
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
    rejects = rejects_path(args.out, args.events)
    with Steps(quiet=args.quiet) as steps:
        steps(f"reading {args.events}")
        events, sample = _training_events(args, steps, rejects)
        with _about_the_log(args.events, sample):
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
                data_end=args.data_end,
                source=args.events.name,
                progress=steps,
            )
    m = manifest["metrics"]
    _say(
        f"{args.out}: {manifest['model_version']} ({manifest['estimator']}, calibration {manifest['calibration']}) "
        f"in {steps.elapsed:.1f}s; {manifest['validation']['kind'].replace('_', '-')} AUC "
        f"{m['auc']:.4f}, PR-AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}"
    )
    for name, b in manifest["baselines"].items():
        _say(f"  baseline {name}: AUC {b['auc']:.4f}, PR-AUC {b['pr_auc']:.4f}, Brier {b['brier']:.4f}")
    warning = mode_warning(manifest)
    if warning:
        _say(f"warning: {args.events}: {warning}")
    if not m["auc"] > 0.5:
        _say(
            f"warning: {args.events}: the model ranked the {m['n']} users it was judged on no better than chance "
            f"(AUC {m['auc']:.4f})"
        )


def _training_events(args: argparse.Namespace, steps: Steps, rejects: Path) -> tuple[Any, dict[str, Any] | None]:
    """Return (events, sample record): the whole file, or with --sample-users only the sampled users' events.

    The rejected rows go to `rejects` at once, so that they are there to explain a log that cannot be trained.
    """
    if args.sample_users is None:
        result = _read(args.events, _not_after(None), steps)
        _write_rejects(result, rejects)
        return result.events, None
    from churnguard_offline.sampling import sampled_events

    _check_exists(args.events)
    events, _population, sample = sampled_events(
        args.events,
        args.sample_users,
        args.cutoff,
        _not_after(None),
        progress=steps.live and not steps.quiet,
        say=_say,
        rejects_to=rejects,
    )
    return events, sample.record


@contextlib.contextmanager
def _about_the_log(path: Path, sample: dict[str, Any] | None) -> Iterator[None]:
    """Name the file when what it holds cannot be trained or judged (too few churners or stayers, a horizon past
    its end, no events before the cutoff), and say so when a sample is what is short."""
    from churnguard_offline.small_data import TooFewExamplesError

    try:
        yield
    except TooFewExamplesError as exc:
        if sample is None or sample["users_used"] >= sample["population_users"]:
            raise InputError(f"{path}: {exc}") from exc
        raise InputError(
            f"{path}: {exc}, in a sample of {sample['users_used']:,} of {sample['population_users']:,} users; "
            "raise --sample-users"
        ) from exc
    except InputError as exc:
        if str(exc).startswith(f"{path}:"):
            raise
        raise InputError(f"{path}: {exc}") from exc


def cmd_score(args: argparse.Namespace) -> None:
    rejects = rejects_path(args.out, args.input)
    with Steps(quiet=args.quiet) as steps:
        steps(f"reading {args.input} and loading the model")
        result, model = _read_and_load(args.input, _not_after(args.as_of), args.model)
        _write_rejects(result, rejects)  # first: they also explain a file that cannot be scored
        n, tiers, as_of = _score_read(args, result, model, steps)
    _say(f"{args.out}: {n} users scored as of {as_of} ({', '.join(f'{k} {v}' for k, v in tiers.items())})")


def _score_read(args: argparse.Namespace, result: Any, model: Any, steps: Steps) -> tuple[int, dict[str, int], str]:
    """Score the users of a read file into --out, a chunk of users at a time; return (users, per risk tier, as_of)."""
    from chalicelib.scoring.scorer import Scorer, iso_time, write_scores_csv
    from chalicelib.scoring.state import StateBatch, build_state

    as_of = _score_as_of(args, result, model)
    steps(f"building the state of {len(result.events.user_ids):,} users")
    state = build_state(result.events)
    steps(f"scoring {len(state):,} users")
    scorer, n, tiers = Scorer(model), 0, Counter()
    # Users are scored independently: chunks give the same rows as one call, with a count to show an ETA by.
    starts = range(0, max(len(state), 1), SCORE_CHUNK_USERS)
    if len(starts) > 1:
        starts = steps.each(starts, len(state), "user", size=lambda start: min(SCORE_CHUNK_USERS, len(state) - start))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="", encoding="utf-8") as fh:
        for start in starts:
            end = start + SCORE_CHUNK_USERS
            scores = scorer.score(StateBatch(state.user_ids[start:end], state.values[start:end]), as_of)
            n += write_scores_csv(scores, fh, header=start == 0)
            tiers.update(scores.counts()["risk_tier"])
    return n, dict(tiers), iso_time(as_of)


def _score_as_of(args: argparse.Namespace, result: Any, model: Any) -> float:
    """Return the time to score as of; raise InputError when the file cannot be scored with this model."""
    from chalicelib.scoring.scorer import missing_signals

    events = result.events
    missing = missing_signals(model.manifest, events) if len(events) else []
    if missing and not args.allow_missing_signals:
        raise InputError(
            f"{args.input}: the model {model.model_version} was trained on logs with {', '.join(missing)} events "
            "and this file has none; its scores would read the missing signals as disengagement. Score it with a "
            "model trained on this kind of log, or pass --allow-missing-signals"
        )
    if args.as_of is not None:
        return args.as_of
    if len(events):
        return float(events.time.max())
    raise InputError(f"{args.input}: no usable events, and no --as-of to score as of")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from churnguard_offline.metrics import json_ready
    from churnguard_offline.training import evaluate

    result, model = _read_and_load(args.events, _not_after(None), args.model)
    if result.rows_rejected:  # evaluate writes no file: the reasons are said, and `score` writes the rows
        _say(f"{args.events}: {result.rejects.summary(written=False)}")
    with _about_the_log(args.events, None):
        report = evaluate(model, result.events, args.cutoff, args.horizon_days, args.population, args.data_end)
    print(json.dumps(json_ready(report), indent=2, allow_nan=False))


def _pipeline(unused: tuple[str, ...] = ()) -> Any:
    """Return a pipeline over the AWS the environment (and --stage) names, not asking for the `unused` variables."""
    from chalicelib import runtime
    from chalicelib.settings import Settings

    return runtime.build_pipeline(Settings.from_env(unused=unused))


def cmd_replay(args: argparse.Namespace) -> None:
    summary = _pipeline().replay(args.run_id)
    if summary["status"] == "nothing_to_replay":
        _say(f"run {args.run_id} is {summary['run_status']}: nothing left to replay")
    print(json.dumps(summary, indent=2, default=str))


def cmd_report(args: argparse.Namespace) -> None:
    from churnguard_offline.report import run_report

    run_report(_pipeline(REPORT_UNUSED), args.format, args.out, args.since, args.as_of, args.horizon_days)


def cmd_export(args: argparse.Namespace) -> None:
    from chalicelib import runtime
    from churnguard_offline.export import export_csv

    written = export_csv(runtime.get_lookup(), args.risk_tier, args.value_tier, args.out)
    print(json.dumps({"out": str(args.out), "users": written}))


def cmd_demo(args: argparse.Namespace) -> None:
    from churnguard_offline.demo import ROOT, run_demo

    if not (ROOT / "app.py").is_file():
        raise InputError(f"{ROOT}: no app.py here; the demo runs the app of a checkout (make demo, in the repository)")
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
    "export": cmd_export,
}


def main(argv: list[str] | None = None, prog: str = DEFAULT_PROG) -> int:
    """Run one command; return the exit status (0 ok, 2 usage or unusable input)."""
    args = build_parser(prog).parse_args(argv)
    try:
        with stage_environment(args), aws_usage_errors(args):
            COMMANDS[args.command](args)
    except (InputError, ModelArtifactError, ConfigError) as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        # A path that cannot be read or written (permissions, a directory, a full disk).
        print(f"{prog} {args.command}: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def console() -> None:
    """Run the `churnguard` console script (pip install .): the same commands as `python -m chalicelib`."""
    sys.exit(main(prog="churnguard"))
