"""Benchmark: offline scoring speed and memory, and AWS API calls per user against what the design needs.

Prints figures; asserts nothing. `make benchmark` runs it with the defaults the README reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _run(cmd: list[str]) -> tuple[float, float]:
    """Run a command in a fresh process; return (wall seconds, peak RSS MiB of that process)."""
    wrapper = (
        "import resource, subprocess, sys, json;"
        "r = subprocess.run(sys.argv[1:]);"
        "print(json.dumps([r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    code, rss_kib = json.loads(out.stdout.strip().splitlines()[-1])
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return wall, rss_kib / 1024.0


def offline(users: int, days: int, data_dir: Path) -> dict[str, float]:
    """Score a generated file offline: the CLI in a fresh process, and the data path in this one."""
    events = data_dir / f"bench-{users}-{days}.csv"
    if not events.exists():
        print(f"generating {events} ...", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "chalicelib",
                "generate",
                "--users",
                str(users),
                "--days",
                str(days),
                "--seed",
                "1",
                "--as-of",
                "2026-11-01",
                "--out",
                str(events),
            ],
            check=True,
            cwd=ROOT,
        )
    with open(events, "rb") as fh:
        n_events = sum(1 for _ in fh) - 1
    out = data_dir / "bench-scores.csv"
    cmd = [sys.executable, "-m", "chalicelib", "score", "--input", str(events), "--out", str(out)]
    wall, rss = _run(cmd)
    with open(out, "rb") as fh:
        users = sum(1 for _ in fh) - 1  # users with at least one event; the generator skips silent ones
    # Import and model load alone, to separate fixed start-up from per-event work.
    startup, _ = _run(
        [
            sys.executable,
            "-c",
            "import churnguard_offline.cli, chalicelib.scoring.scorer;"
            "from chalicelib.scoring.artifact import MODEL_CACHE; MODEL_CACHE.get()",
        ]
    )
    phases = _phases(events)
    return {
        "events": n_events,
        "users": users,
        "file_mib": round(events.stat().st_size / 2**20, 1),
        "cli_wall_s": round(wall, 2),
        "cli_events_per_s": round(n_events / wall),
        "cli_users_per_s": round(users / wall),
        "peak_rss_mib": round(rss, 1),
        "startup_s": round(startup, 2),
        **phases,
    }


def _phases(events: Path, repeats: int = 3) -> dict[str, float]:
    """Time the data path (file to scores CSV) in this process with the model loaded: median of runs."""
    from chalicelib.ingest import read_event_file
    from chalicelib.scoring.artifact import MODEL_CACHE
    from chalicelib.scoring.scorer import Scorer, write_scores_csv
    from chalicelib.scoring.state import build_state

    scorer = Scorer(MODEL_CACHE.get())
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = read_event_file(events)
        t1 = time.perf_counter()
        state = build_state(result.events)
        t2 = time.perf_counter()
        scores = scorer.score(state, float(result.events.time.max()))
        t3 = time.perf_counter()
        with open(os.devnull, "w") as fh:
            write_scores_csv(scores, fh)
        t4 = time.perf_counter()
        runs.append((t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        result.rejects.close()
    total, read, build, score, write = sorted(runs)[len(runs) // 2]
    return {
        "data_path_s": round(total, 2),
        "data_path_events_per_s": round(len(result.events) / total),
        "read_s": round(read, 2),
        "state_s": round(build, 2),
        "score_s": round(score, 2),
        "write_s": round(write, 2),
    }


def aws_calls(users: int) -> dict[str, object]:
    """Count DynamoDB and SQS calls of one S3 run and one schedule run on moto, against lower bounds."""
    import boto3
    from moto import mock_aws

    from chalicelib import runtime
    from chalicelib.observability import logger
    from chalicelib.settings import Settings
    from churnguard_offline.bootstrap import ensure_resources
    from churnguard_offline.generate import generate_events, write_event_log

    logger.setLevel("WARNING")
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    os.environ.update(config["stages"]["dev"]["environment_variables"])
    os.environ.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        LOG_LEVEL="WARNING",
        SWEEP_MIN_AGE_SECONDS="0",
    )
    from datetime import datetime

    as_of = datetime(2026, 11, 1, tzinfo=UTC)
    batch = generate_events(users, 90, 2, as_of)
    path = ROOT / "data" / "bench-aws.csv"
    write_event_log(batch, path)

    def calls(pipeline: object) -> dict[str, int]:
        """The adapters' own (thread-safe) call counts."""
        return {**pipeline.tables.calls, "SendMessageBatch": pipeline.queues.calls}

    with mock_aws():
        runtime.clear()
        settings = Settings.from_env()
        ensure_resources(settings)
        boto3.client("s3").put_object(
            Bucket=settings.behaviour_bucket, Key="incoming/bench.csv", Body=path.read_bytes()
        )
        pipeline = runtime.get_pipeline()
        started = time.perf_counter()
        s3_run = pipeline.process_object("incoming/bench.csv", None, as_of.timestamp())
        s3_wall = time.perf_counter() - started
        s3_calls = calls(pipeline)
        runtime.clear()
        pipeline = runtime.get_pipeline()
        started = time.perf_counter()
        sched = pipeline.run_schedule(as_of.timestamp() + 7 * 86400)
        sched_wall = time.perf_counter() - started
        sched_calls = calls(pipeline)
        runtime.clear()

    def expected(run: dict, reads_state: bool) -> dict[str, int]:
        """Calls the design needs: reads 100 users a call, one conditional write per item, one mark per message.

        Messages are batched within a chunk of users, so each chunk may add one part-filled batch per tier.
        """
        users, sent = run["users_scored"], sum(run["messages_sent"].values())
        return {
            "BatchGetItem": (2 if reads_state else 1) * math.ceil(users / 100),
            "PutItem": (2 if reads_state else 1) * users,
            "UpdateItem": sent,
            "SendMessageBatch": sum(math.ceil(n / 10) for n in run["messages_sent"].values()),
        }

    def per_user(calls: dict[str, int], users: int) -> float:
        return round(sum(n for op, n in calls.items() if op in ("PutItem", "UpdateItem", "BatchGetItem")) / users, 2)

    return {
        "users": s3_run["users_scored"],
        "s3_run": {
            "wall_s": round(s3_wall, 2),
            "calls": s3_calls,
            "expected": expected(s3_run, True),
            "dynamodb_calls_per_user": per_user(s3_calls, s3_run["users_scored"]),
            "messages": s3_run["messages_sent"],
        },
        "schedule_run": {
            "wall_s": round(sched_wall, 2),
            "calls": sched_calls,
            "expected": expected(sched, False),
            "dynamodb_calls_per_user": per_user(sched_calls, sched["users_scored"]),
            "messages": sched["messages_sent"],
        },
    }


def _synthetic_csv(path: Path, users: int, events: int) -> None:
    """Write `events` rows spread evenly over `users` ids, in the shape of a real export (about 45 bytes a row)."""
    types = ("login", "session", "purchase", "content_view", "feature_use")
    with open(path, "w") as fh:
        fh.write("user_id,event_time,event_type,value\n")
        for i in range(events):
            second = 1_780_000_000 + i * 7
            day, rest = divmod(second, 86400)
            stamp = (
                f"2026-{1 + day % 12:02d}-{1 + day % 28:02d}T{rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}Z"
            )
            kind = types[i % len(types)]
            value = f"{(i % 97) + 0.5}" if kind in ("session", "purchase") else ""
            fh.write(f"u{i % users:08d},{stamp},{kind},{value}\n")


def _peak_bytes(path: Path) -> int:
    """Return the peak bytes a file run holds while in memory: read, state build, the event index."""
    import tracemalloc

    from chalicelib.ingest import read_event_file
    from chalicelib.retention.outcomes import EventIndex
    from chalicelib.scoring.state import build_state

    tracemalloc.start()
    result = read_event_file(path)
    delta = build_state(result.events)
    index = EventIndex(result.events)
    index.first_after(result.events.user_ids[0], 0.0)  # builds the sorted index, as a user with an exposure does
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result.rejects.close()
    del delta, index
    return peak


def memory(data_dir: Path) -> dict[str, object]:
    """Measure a file run's peak memory at several sizes; fit bytes per event and per user (least squares)."""
    import numpy as np

    shapes = [(10_000, 1_000_000), (200_000, 1_000_000), (10_000, 2_000_000), (400_000, 2_000_000)]
    rows = []
    for users, events in shapes:
        path = data_dir / f"memory-{users}-{events}.csv"
        if not path.exists():
            _synthetic_csv(path, users, events)
        rows.append((users, events, _peak_bytes(path)))
    fit, *_ = np.linalg.lstsq(np.array([[e, u, 1.0] for u, e, _ in rows]), np.array([p for *_, p in rows]), rcond=None)
    per_event, per_user, fixed = fit
    return {
        "runs": [{"users": u, "events": e, "peak_mib": round(p / 2**20, 1)} for u, e, p in rows],
        "bytes_per_event": round(float(per_event), 1),
        "bytes_per_user": round(float(per_user), 1),
        "fixed_mib": round(float(fixed) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000, help="offline users (about 10 events each in 90 days)")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--aws-users", type=int, default=2_000, help="users in the moto run")
    parser.add_argument("--skip-aws", action="store_true")
    parser.add_argument("--aws-only", action="store_true", help="only the moto run (API calls, wall time)")
    parser.add_argument("--memory-only", action="store_true", help="only a file run's bytes per event and per user")
    args = parser.parse_args()
    data_dir = ROOT / "data"
    data_dir.mkdir(exist_ok=True)
    if args.memory_only:
        print(json.dumps({"memory": memory(data_dir)}, indent=2))
        return
    report = {} if args.aws_only else {"offline": offline(args.users, args.days, data_dir)}
    if report:
        print(json.dumps(report, indent=2), flush=True)
    if not args.skip_aws:
        report["aws"] = aws_calls(args.aws_users)
        print(json.dumps({"aws": report["aws"]}, indent=2))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"benchmark process peak RSS {peak:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
