"""Benchmark at scale: users/s per worker with AWS latency injected, scaling over workers, calls, memory, cost.

The run logic runs against the in-memory fakes of its ports (tests/fakes.py) behind a proxy that sleeps for
each AWS call as the adapters would make it and counts the calls and capacity units: BatchGetItem per 100 keys,
one PutItem per conditional write and one UpdateItem per message marked sent (run `write_concurrency` at a
time, as BehaviourTables runs them), a Scan per page of at most 1 MB, one SendMessageBatch per 10 messages, one
S3 request per bucket call. moto is not used: it spends milliseconds of CPU per call, so a moto figure measures
moto. From the measured rates and AWS's published prices it projects wall time and cost at 10 M users.

Prints figures; asserts nothing. `make benchmark` runs it after scripts/benchmark.py.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# A function of 2,048 MB has about one vCPU (1,769 MB is one): the model predicts on one thread, as there. Several
# OpenMP threads per worker thread would also oversubscribe the cores and measure the spinning.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from chalicelib.observability import logger  # noqa: E402
from chalicelib.retry import Backoff  # noqa: E402
from chalicelib.runs.pipeline import ScoringPipeline  # noqa: E402
from chalicelib.scoring.artifact import MODEL_CACHE  # noqa: E402
from chalicelib.scoring.events import EventBatch  # noqa: E402
from chalicelib.scoring.scorer import Scorer  # noqa: E402
from chalicelib.settings import Settings  # noqa: E402
from churnguard_offline.generate import generate_events, write_event_log  # noqa: E402
from tests.fakes import FakeBucket, FakeLeases, FakeLedger, FakeQueues, FakeTables  # noqa: E402

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
DAY = 86400.0
GET_BATCH = 100  # keys per BatchGetItem (chalicelib/aws/tables.py)
SCAN_PAGE_BYTES = 1024 * 1024  # DynamoDB returns at most 1 MB per Scan call
SQS_BATCH = 10

# Published on-demand prices, us-east-1 (DynamoDB's after its 2024-11-01 reduction), checked on 2026-12-01: Step
# Functions against a stored copy of AWS's own pricing page ($0.0250 per 1,000 transitions in us-east-1); Lambda,
# DynamoDB, SQS and S3 against published transcriptions of AWS's pages, which render these rates client-side and
# cannot be read from the build machine. Re-check before quoting a figure: prices change, and other regions differ.
PRICES_DATE = "2026-12-01"
PRICES = {
    "lambda_gb_s": 0.0000166667,  # x86, per GB-second
    "lambda_request": 0.20 / 1e6,
    "dynamodb_wru": 0.625 / 1e6,  # on-demand, per write request unit (1 KB)
    "dynamodb_rru": 0.125 / 1e6,  # on-demand, per read request unit (4 KB strongly consistent, 8 KB eventual)
    "sqs_request": 0.40 / 1e6,  # standard queue, per request of up to 64 KB
    "sfn_transition": 0.025 / 1000,  # Standard workflow, per state transition
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,
}
LAMBDA_GB = 2.0  # the functions' 2,048 MB

# Bucket calls by the S3 request they make.
S3_GETS = (
    "open",
    "read_range",
    "backfill_get",
    "opt_out_list",
    "run_record_get",
    "checkpoint_get",
    "attempts_get",
    "dead_letters_get",
    "rescored_through",
    "schedule_writes_get",
)
S3_PUTS = (
    "backfill_put",
    "segments_put",
    "put_rejected",
    "run_record_put",
    "checkpoint_put",
    "attempts_put",
    "dead_letters_put",
    "closed_put",
    "lift_report_put",
    "quarantine",
    "mark_rescored",
    "schedule_writes_put",
)
S3_FREE = ("checkpoint_delete", "attempts_delete", "dead_letters_delete", "backfill_delete")  # DELETE is not charged


class Meter:
    """Sleeps for each AWS call and counts calls and capacity units; one per worker, so no lock is contended."""

    def __init__(self, ddb_s: float, sqs_s: float, s3_s: float, concurrency: int) -> None:
        self.ddb_s, self.sqs_s, self.s3_s, self.concurrency = ddb_s, sqs_s, s3_s, concurrency
        self.calls: Counter[str] = Counter()
        self.units: Counter[str] = Counter()
        self.waited = 0.0  # seconds slept for AWS's latency
        self._lock = threading.Lock()

    def wait(self, seconds: float) -> None:
        with self._lock:
            self.waited += seconds
        time.sleep(seconds)

    def ddb(self, op: str, calls: int, rounds: int | None = None, wru: float = 0.0, rru: float = 0.0) -> None:
        """Count `calls` DynamoDB calls, made `rounds` one after another (all of them, by default)."""
        with self._lock:
            self.calls[op] += calls
            self.units["wru"] += wru
            self.units["rru"] += rru
        self.wait(self.ddb_s * (calls if rounds is None else rounds))

    def parallel(self, op: str, calls: int, wru: float) -> None:
        """Count conditional writes run `concurrency` at a time."""
        self.ddb(op, calls, math.ceil(calls / self.concurrency), wru=wru)

    def sqs(self, calls: int) -> None:
        with self._lock:
            self.calls["SendMessageBatch"] += calls
        self.wait(self.sqs_s * calls)

    def s3(self, kind: str) -> None:
        with self._lock:
            self.calls[f"S3.{kind}"] += 1
        self.wait(self.s3_s)


# ---- item sizes, as DynamoDB bills them ----------------------------------------------------------------------
def value_bytes(value: Any) -> int:
    """Return the size DynamoDB counts for one attribute value (strings and binary by length, numbers ~21)."""
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, (int, float)):
        return 1 + math.ceil(len(repr(value).replace("-", "").replace(".", "")) / 2)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, (list, tuple)):
        return 3 + sum(1 + value_bytes(v) for v in value)
    if isinstance(value, dict):
        return 3 + sum(1 + len(k) + value_bytes(v) for k, v in value.items())
    return len(str(value))


def item_bytes(item: dict[str, Any]) -> int:
    """Return an item's size: attribute names plus values."""
    return sum(len(k) + value_bytes(v) for k, v in item.items())


def state_item_bytes(stored: dict[str, Any], user_id: str) -> int:
    """Return the size of the state item the adapter writes for a fake's stored state (tables.py `_put_state`)."""
    return item_bytes(
        {
            "user_id": user_id,
            "state": stored["row"].tobytes(),
            "state_layout": "v3-" + "x" * 16,
            "first_seen": "2026-01-01T00:00:00Z",
            "last_seen": "2026-01-01T00:00:00Z",
            "events": stored["events"],
            "state_run_id": "obj-" + "x" * 20,
            "state_version": stored["version"],
            "applied_runs": stored["applied"],
            "expires_at": 1_800_000_000,
        }
    )


def wru(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def rru_strong(size: int) -> int:
    return max(1, math.ceil(size / 4096))


# ---- the proxies ---------------------------------------------------------------------------------------------
class MeteredLeases(FakeLeases):
    """Run leases: one conditional PutItem to take or renew, one DeleteItem to release (aws/leases.py)."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    def take(self, run_id: str, holder: str, until: float, now: float):
        self.meter.ddb("lease.PutItem", 1, wru=1)
        return super().take(run_id, holder, until, now)

    def renew(self, run_id: str, holder: str, until: float):
        self.meter.ddb("lease.PutItem", 1, wru=1)
        return super().renew(run_id, holder, until)

    def release(self, run_id: str, holder: str) -> None:
        self.meter.ddb("lease.DeleteItem", 1, wru=1)
        super().release(run_id, holder)


class MeteredLedger(FakeLedger):
    """The ledger: one GetItem to look a file up, one conditional PutItem to record it (aws/ledger.py)."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter

    def find(self, key: str, content: str):
        self.meter.ddb("ledger.GetItem", 1, rru=1)
        return super().find(key, content)

    def put(self, key: str, content: str, record: dict[str, Any]) -> None:
        self.meter.ddb("ledger.PutItem", 1, wru=1)
        super().put(key, content, record)


class MeteredTables(FakeTables):
    """FakeTables that cost what BehaviourTables' calls cost: latency, calls and capacity units."""

    def __init__(self, meter: Meter, retention_seconds: int) -> None:
        super().__init__(retention_seconds)
        self.meter = meter
        self.leases = MeteredLeases(meter)
        self.ledger = MeteredLedger(meter)

    def get_states(self, user_ids):
        found = [u for u in user_ids if u in self.states]
        rru = sum(rru_strong(state_item_bytes(self.states[u], u)) for u in found) + len(user_ids) - len(found)
        self.meter.ddb("BatchGetItem", math.ceil(len(user_ids) / GET_BATCH), rru=rru)
        return super().get_states(user_ids)

    def get_risks(self, user_ids):
        found = [u for u in user_ids if u in self.risks]
        rru = sum(rru_strong(item_bytes(self.risks[u])) for u in found) + len(user_ids) - len(found)
        self.meter.ddb("BatchGetItem", math.ceil(len(user_ids) / GET_BATCH), rru=rru)
        return super().get_risks(user_ids)

    def scan_states(self, start_key, page_items, *, as_of, segment=None, total_segments=None):
        pages = super().scan_states(start_key, page_items, as_of=as_of, segment=segment, total_segments=total_segments)
        for stored, resume in pages:
            size = sum(state_item_bytes(self.states[u], u) for u in stored.batch.user_ids)
            # Eventually consistent: half a unit per 4 KB of the items read, summed over the page.
            self.meter.ddb("Scan", max(1, math.ceil(size / SCAN_PAGE_BYTES)), rru=math.ceil(size / 4096) / 2)
            yield stored, resume

    def scan_exposures(self, segment=None, total_segments=None):
        size = sum(item_bytes(i) for i in self.risks.values())  # a Scan reads whole items, then projects
        if total_segments:
            size //= total_segments
        self.meter.ddb("Scan", max(1, math.ceil(size / SCAN_PAGE_BYTES)), rru=math.ceil(size / 4096) / 2)
        return super().scan_exposures(segment, total_segments)

    def put_states(self, writes):
        out = super().put_states(writes)
        size = sum(wru(state_item_bytes(self.states[w.user_id], w.user_id)) for w in writes if w.user_id in self.states)
        self.meter.parallel("PutItem", len(writes), size)
        return out

    def put_risks(self, writes):
        out = super().put_risks(writes)
        self.meter.parallel("PutItem", len(writes), sum(wru(item_bytes(w.item) + 40) for w in writes))
        return out

    def confirm_sent(self, claims):
        # An UpdateItem is billed on the larger of the item before and after: the whole risk item.
        units = sum(wru(item_bytes(self.risks[u])) for u, _ in claims if u in self.risks)
        self.meter.parallel("UpdateItem", len(claims), units)
        return super().confirm_sent(claims)


class MeteredQueues(FakeQueues):
    def __init__(self, meter: Meter, queue_names: dict[str, str]) -> None:
        super().__init__(queue_names)
        self.meter = meter

    def send(self, tier, messages):
        self.meter.sqs(math.ceil(len(messages) / SQS_BATCH))
        return super().send(tier, messages)


class MeteredBucket(FakeBucket):
    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter = meter


def _metered(name: str, kind: str):
    base = getattr(FakeBucket, name)

    def call(self, *args, **kwargs):
        self.meter.s3(kind)
        return base(self, *args, **kwargs)

    call.__name__ = name
    return call


for _name in S3_GETS:
    setattr(MeteredBucket, _name, _metered(_name, "GET"))
for _name in S3_PUTS:
    setattr(MeteredBucket, _name, _metered(_name, "PUT"))
for _name in (*S3_FREE, "closed_all"):
    setattr(MeteredBucket, _name, _metered(_name, "LIST" if _name == "closed_all" else "DELETE"))


# ---- one worker ------------------------------------------------------------------------------------------------
SETTINGS = Settings(
    behaviour_bucket="bucket",
    incoming_prefix="incoming/",
    risk_table="risk",
    state_table="state",
    queue_high="q-high",
    queue_medium="q-medium",
)


class Worker:
    """One Lambda container's pipeline over metered fakes, with its own slice of users and its own clock."""

    def __init__(self, latency: dict[str, float], settings: Settings = SETTINGS) -> None:
        self.meter = Meter(latency["ddb"], latency["sqs"], latency["s3"], settings.write_concurrency)
        self.now = AS_OF.timestamp()
        self.bucket = MeteredBucket(self.meter)
        self.tables = MeteredTables(self.meter, settings.retention_seconds)
        self.queues = MeteredQueues(self.meter, settings.queues)
        self.pipeline = ScoringPipeline(
            settings,
            self.bucket,
            self.tables,
            self.queues,
            Scorer(MODEL_CACHE.get()),
            clock=lambda: self.now,
            backoff=Backoff(sleep=lambda _s: None),
        )

    def land(self, key: str, data: bytes) -> None:
        self.bucket.objects[key] = (data, datetime.fromtimestamp(self.now, UTC))

    def file_run(self, key: str) -> dict[str, Any]:
        return self.pipeline.process_object(key, landed_at=self.now)

    def schedule(self, at: float) -> dict[str, Any]:
        self.now = at
        return self.pipeline.run_schedule(at=at)


def csv_of(batch: EventBatch, path: Path) -> bytes:
    write_event_log(batch, path)
    return path.read_bytes()


def slices(population: EventBatch, n: int) -> list[EventBatch]:
    """Split a population into `n` slices of users (by user index)."""
    return [population.select(population.user_index % n == i) for i in range(n)]


PHASES = ("file", "schedule")


def _clocks(worker: Worker) -> dict[str, float]:
    """This process's clocks: the machine's monotonic time, its CPU, its waits on AWS and on a free core."""
    try:  # Linux: nanoseconds on a CPU, nanoseconds runnable but waiting for one, time slices
        waiting_for_core = int(Path("/proc/self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        waiting_for_core = 0.0
    return {
        "at": time.perf_counter(),  # CLOCK_MONOTONIC: one clock for every process of the machine
        "cpu": time.process_time(),
        "waited": worker.meter.waited,
        "core_wait": waiting_for_core,
    }


def _worker_process(worker: Worker, at: float, barrier: Any, out: Any) -> None:
    """A worker in a process of its own: a file run, then the schedule, each started with the others at a barrier."""
    jobs = {"file": lambda: worker.file_run("incoming/slice.csv"), "schedule": lambda: worker.schedule(at)}
    results = {}
    for phase in PHASES:
        worker.meter.calls.clear()
        barrier.wait()
        before = _clocks(worker)
        summary = jobs[phase]()
        after = _clocks(worker)
        results[phase] = {
            "summary": summary,
            "start": before["at"],
            "end": after["at"],
            **{k: after[k] - before[k] for k in ("cpu", "waited", "core_wait")},
            "calls": Counter(worker.meter.calls),
        }
    out.send(results)
    out.close()


def in_processes(workers: list[Worker], at: float) -> dict[str, list[dict[str, Any]]]:
    """Run every worker at once, each in a forked process (as Lambda runs each child in its own container).

    Threads would measure the GIL: two workers' Python code cannot run at once in one process, while two Lambda
    children run on two machines. Returns, per phase, each worker's summary, times and calls.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(workers))
    pipes, procs = [], []
    for w in workers:
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_process, args=(w, at, barrier, send))
        proc.start()
        send.close()
        pipes.append(receive)
        procs.append(proc)
    results = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
        if proc.exitcode:
            raise RuntimeError(f"a worker process failed (exit {proc.exitcode})")
    return {phase: [r[phase] for r in results] for phase in PHASES}


def _phase_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A phase's figures over its workers: the machine's rate, each worker's own, and where the time went."""
    users = sum(r["summary"]["users_scored"] for r in runs)
    wall = max(r["end"] for r in runs) - min(r["start"] for r in runs)
    cpu, waited, core_wait = (sum(r[k] for r in runs) for k in ("cpu", "waited", "core_wait"))
    # Each worker's rate over its own wall time less the time it stood waiting for a core, summed: the machine's
    # rate had every worker a core of its own, as every Lambda child has. Measured by the kernel, not modelled.
    own_cores = sum(r["summary"]["users_scored"] / (r["end"] - r["start"] - r["core_wait"]) for r in runs)
    return {
        "users_per_s": users / wall,
        "own_cores_users_per_s": own_cores,
        # A worker's users over its CPU plus its AWS waits (what it does with no other work at all).
        "own_users_per_s": users / (cpu + waited),
        "cpu_ms_per_user": 1000 * cpu / users,
        "wait_ms_per_user": 1000 * waited / users,
        "core_wait_ms_per_user": 1000 * core_wait / users,
        "calls": sum((r["calls"] for r in runs), Counter()),
        "users": users,
        "messages": sum(sum(r["summary"]["messages_sent"].values()) for r in runs),
        "skipped": sum(r["summary"].get("risk_writes_skipped", 0) for r in runs),
    }


def scaling(files: list[bytes], latency: dict[str, float], counts: tuple[int, ...], repeats: int) -> dict[str, Any]:
    """users/s of file runs and of the schedule a week later, for each number of concurrent workers.

    Each worker is a process with its own slice of users and its own fakes. Besides the machine's wall-clock rate,
    each worker's own rate and the time its process stood runnable but waiting for a core (Linux's schedstat):
    with more workers than cores, that wait is this machine's, not the code's.
    """
    out: dict[str, Any] = {}
    for n in counts:
        figures: dict[str, dict[str, Any]] = {}
        for _ in range(repeats):  # the best of `repeats` rounds, each on workers made anew
            workers = [Worker(latency) for _ in range(n)]
            for w, data in zip(workers, files, strict=False):
                w.land("incoming/slice.csv", data)
            for phase, runs in in_processes(workers, AS_OF.timestamp() + 7 * DAY).items():
                f = _phase_figures(runs)
                if phase not in figures or f["users_per_s"] > figures[phase]["users_per_s"]:
                    figures[phase] = f
        out[n] = {f"{phase}_{k}": v for phase, f in figures.items() for k, v in f.items()}
    return out


def scaling_table(res: dict[int, dict[str, Any]], phase: str) -> str:
    """One phase's scaling: the machine's rate and the rate on cores of their own, each against linear."""
    first = min(res)
    base, base_own = res[first][f"{phase}_users_per_s"], res[first][f"{phase}_own_cores_users_per_s"]
    rows = [
        [
            n,
            r[f"{phase}_users_per_s"],
            r[f"{phase}_users_per_s"] / (base * n / first),
            r[f"{phase}_own_cores_users_per_s"],
            r[f"{phase}_own_cores_users_per_s"] / (base_own * n / first),
            _split(r, phase),
        ]
        for n, r in res.items()
    ]
    header = [f"{phase}: workers", "this machine", "vs linear", "a core each", "vs linear", "ms/user: cpu+aws (core)"]
    return table(rows, header)


def _split(r: dict[str, Any], phase: str) -> str:
    """A phase's milliseconds per user: CPU + waiting on AWS, and (in brackets) waiting for a free core."""
    cpu, aws, core = (r[f"{phase}_{k}_ms_per_user"] for k in ("cpu", "wait", "core_wait"))
    return f"{cpu:.2f} + {aws:.2f} ({core:.2f})"


def calls_before_scale_out(r: dict[str, Any]) -> dict[str, float]:
    """DynamoDB calls per user the design before the scale-out makes on the same users and messages.

    A file run: a BatchGetItem of state and one of risk per 100 users, a conditional PutItem of each, an UpdateItem
    per message sent. The schedule: a BatchGetItem of risk per 100 users, a PutItem of each, an UpdateItem per
    message. scripts/benchmark.py's population (2.40 and 1.19 on moto) gets fewer messages per user than this one.
    """
    f_users, s_users = r["file_users"], r["schedule_users"]
    return {
        "file": (2 * math.ceil(f_users / GET_BATCH) + 2 * f_users + r["file_messages"]) / f_users,
        "schedule": (math.ceil(s_users / GET_BATCH) + s_users + r["schedule_messages"]) / s_users,
    }


def per_user(calls: Counter[str], users: int) -> dict[str, float]:
    """DynamoDB calls per user: as scripts/benchmark.py counts them (reads and conditional writes), and all."""
    counted = sum(calls[op] for op in ("BatchGetItem", "PutItem", "UpdateItem"))
    every = sum(n for op, n in calls.items() if not op.startswith(("S3.", "SendMessage")))
    return {"comparable": round(counted / users, 3), "all": round(every / users, 3)}


# ---- item 4: risk writes a week after a backfill ---------------------------------------------------------------
def week_after_backfill(population: EventBatch, tmp: Path, trickle: float) -> dict[str, Any]:
    """A backfill, then seven daily schedules; with `trickle`, that share of users comes back each day."""
    import numpy as np

    w = Worker({"ddb": 0.0, "sqs": 0.0, "s3": 0.0})
    w.land("incoming/backfill.csv", csv_of(population, tmp / "backfill.csv"))
    w.file_run("incoming/backfill.csv")
    rng = np.random.default_rng(3)
    days = []
    for day in range(1, 8):
        at = AS_OF.timestamp() + day * DAY
        file_writes = 0
        if trickle:
            back = rng.random(len(population.user_ids)) < trickle
            one = population.select(back[population.user_index])
            _, first = np.unique(one.user_index, return_index=True)
            one = one.select(np.isin(np.arange(len(one)), first))
            one.time[:] = at - rng.uniform(1800, 20 * 3600, len(one))
            w.now = at - 600
            w.land(f"incoming/day-{day}.csv", csv_of(one, tmp / f"day-{day}.csv"))
            file_writes = w.file_run(f"incoming/day-{day}.csv")["users_scored"]
        s = w.schedule(at)
        days.append(
            {
                "day": day,
                "file_risk_writes": file_writes,
                "scored": s["users_scored"],
                "skipped": s.get("risk_writes_skipped", 0),
            }
        )
    scored = sum(d["scored"] for d in days)
    skipped = sum(d["skipped"] for d in days)
    files = sum(d["file_risk_writes"] for d in days)
    return {
        "trickle_share_per_day": trickle,
        "days": days,
        "schedule_risk_writes_saved": round(skipped / scored, 3) if scored else 0.0,
        "all_risk_writes_saved": round(skipped / (scored + files), 3) if scored else 0.0,
    }


def daily_active_share(population: EventBatch) -> float:
    """Return the share of users with an event on an average day of the population's last week."""
    end = float(population.time.max())
    shares = []
    for d in range(7):
        on = (population.time > end - (d + 1) * DAY) & (population.time <= end - d * DAY)
        shares.append(len(set(population.user_index[on].tolist())) / len(population.user_ids))
    return round(sum(shares) / len(shares), 4)


# ---- peak RSS ----------------------------------------------------------------------------------------------------
# The backfill's workers on the metered fakes in a fresh process: the file is landed and handed over, the split
# and every range child run, then the child measured runs alone under tracemalloc (numpy's buffers included).
_BACKFILL_CHILD = """
import dataclasses, json, resource, sys, tracemalloc
sys.path.insert(0, '.')
from scripts.benchmark_scale import SETTINGS, Worker
from tests.fakes import FakeWorkflows
from tests.unit.runs.backfill_driver import items
settings = dataclasses.replace(SETTINGS, backfill_threshold_bytes=1, backfill_range_bytes={range_bytes},
                               backfill_shards={shards})
w = Worker({{'ddb': 0.0, 'sqs': 0.0, 's3': 0.0}}, settings)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
workflows = FakeWorkflows()
w.pipeline.ctx.workflows = workflows
w.land('incoming/backfill.csv', open({path!r}, 'rb').read())
run_id = w.file_run('incoming/backfill.csv')['run_id']
backfill = w.pipeline.backfill
job = dict(workflows.executions[('backfill', run_id)])
split = backfill.split(job)
ranges = items(w.bucket, split['ranges_key'])
for item in ranges[1:] if {kind!r} == 'range' else ranges:
    backfill.range(item)
child = ranges[0] if {kind!r} == 'range' else items(w.bucket, split['shards_key'])[0]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tracemalloc.start()
getattr(backfill, {kind!r})(child)
peak = tracemalloc.get_traced_memory()[1] / 2**20
figures = {{'loaded_mib': round(loaded, 1), 'child_peak_mib': round(peak, 1), 'ranges': len(ranges)}}
print(json.dumps({{**figures, 'rss_before_child_mib': round(before, 1)}}))
"""


def _backfill_child(kind: str, path: Path, range_bytes: int, shards: int) -> dict[str, Any]:
    """Run one backfill child (`range` or `shard`) of the file at `path`; return its memory figures."""
    code = _BACKFILL_CHILD.format(range_bytes=range_bytes, shards=shards, path=str(path), kind=kind)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # A container's own peak: the code and the model loaded, then what the child holds at its peak.
    figures["peak_rss_mib"] = round(figures["loaded_mib"] + figures["child_peak_mib"], 1)
    return figures


def range_child_peak_rss(range_bytes: int, data_dir: Path) -> dict[str, Any]:
    """Peak memory of the backfill's range child (`backfill_range`) on one range of `range_bytes`."""
    from scripts.benchmark import _synthetic_csv

    path = data_dir / f"range-{range_bytes >> 20}mib.csv"
    if not path.exists():
        _synthetic_csv(path, 200_000, range_bytes // 44)
    figures = _backfill_child("range", path, range_bytes + 1, shards=64)
    return {"what": "backfill_range on one range (64 shards)", "bytes": path.stat().st_size, **figures}


def shard_child_peak_rss(users: int, events: int, data_dir: Path) -> dict[str, Any]:
    """Peak memory of the backfill's shard child (`backfill_shard`) holding `users` users and `events` events."""
    from scripts.benchmark import _synthetic_csv

    path = data_dir / f"shard-{users}-{events}.csv"
    if not path.exists():
        _synthetic_csv(path, users, events)
    figures = _backfill_child("shard", path, 8 << 20, shards=1)
    return {"what": "backfill_shard on one shard (merge, score, deliver)", "users": users, "events": events, **figures}


# ---- projections -------------------------------------------------------------------------------------------------
# What a table serves, in request units a second: a new on-demand table at once (AWS: "up to 4,000 writes and
# 12,000 reads a second", then toward double its previous peak every 30 minutes), and a partition at most.
NEW_TABLE = {"name": "new on-demand table", "wru_s": 4000.0, "rru_s": 12000.0}
PARTITION_WRU_S, PARTITION_RRU_S = 1000.0, 3000.0


def bounded(compute_s: float, wru: float, rru: float, table: dict[str, Any]) -> tuple[float, str]:
    """Return the wall seconds of a run and what bounds it: the children's work, or the table's throughput."""
    options = {"children": compute_s, "table writes": wru / table["wru_s"], "table reads": rru / table["rru_s"]}
    bound = max(options, key=options.get)
    return options[bound], bound


def warm_for(wru: float, rru: float, seconds: float) -> dict[str, Any]:
    """Return the warm throughput a table needs to take `wru` and `rru` within `seconds`."""
    return {
        "name": f"warm throughput {math.ceil(wru / seconds / 1000) * 1000:,.0f} writes/s",
        "wru_s": math.ceil(wru / seconds / 1000) * 1000.0,
        "rru_s": max(12000.0, math.ceil(rru / seconds / 1000) * 1000.0),
    }


def planned_segments(users: float, wru_per_user: float, table: dict[str, Any]) -> int:
    """The segments the schedule's plan gives a table of `users` users, with the functions' defaults (900 s)."""
    from chalicelib.runs.deadline import Deadline
    from chalicelib.runs.ports import TableStats
    from chalicelib.runs.schedule_map import segment_count, write_units_per_user
    from chalicelib.runs.schedule_run import invocation_reach

    reach = invocation_reach(SETTINGS, Deadline(seconds_left=lambda: 900.0))
    same = {"model_version": "m", "playbook_version": "p"}
    units = write_units_per_user({"write_units_per_user": wru_per_user, **same}, "m", "p")
    return segment_count(TableStats(int(users), int(table["wru_s"])), int(reach), SETTINGS, units)


def schedule_projection(
    m: dict[str, Any], users: float, saved: float, table: dict[str, Any] = NEW_TABLE
) -> dict[str, Any]:
    """The daily schedule over `users` users on a Distributed Map of as many children as its plan gives, on `table`.

    The plan sizes the map by what the schedule before wrote per user (the week's risk writes and message marks),
    so the projection takes the same number of children the deployed plan would.
    """
    rate = m["schedule_users_per_s"]
    worker_s = users / rate
    u = m["schedule_units_per_user"]
    # The measured schedule already skipped some writes; scale the risk writes to the week's saved share.
    wru = users * (u["wru_risk"] * (1 - saved) / max(1e-9, 1 - m["schedule_skip_share"]) + u["wru_other"])
    rru = users * u["rru"]
    concurrency = planned_segments(users, wru / users, table)
    wall, bound = bounded(worker_s / concurrency, wru, rru, table)
    cost = {
        "lambda": worker_s * LAMBDA_GB * PRICES["lambda_gb_s"] + concurrency * 2 * PRICES["lambda_request"],
        "dynamodb": wru * PRICES["dynamodb_wru"] + rru * PRICES["dynamodb_rru"],
        "sqs": users * m["schedule_sqs_per_user"] * PRICES["sqs_request"],
        "step_functions": (concurrency * 2 * 4 + 10) * PRICES["sfn_transition"],
        "s3": users / 1000 * PRICES["s3_put"] + concurrency * 4 * PRICES["s3_get"],
    }
    return {
        "table": table["name"],
        "wall_min": wall / 60,
        "bound_by": bound,
        "segments": concurrency,
        "children_busy": min(concurrency, worker_s / wall),
        "wru": wru,
        "rru": rru,
        "writes_per_s": wru / wall,
        "reads_per_s": rru / wall,
        "cost": cost,
        "total": sum(cost.values()),
    }


def backfill_projection(
    m: dict[str, Any],
    users: float,
    events: float,
    concurrency: int,
    range_mib: int,
    shards: int,
    table: dict[str, Any] = NEW_TABLE,
) -> dict[str, Any]:
    """A backfill of `events` events of `users` users: ranges, then shards, then the finish step."""
    ranges = math.ceil(events * 44 / (range_mib * 2**20))
    range_s = range_mib * 2**20 / 44 / m["reader_events_per_s"]
    rate = m["file_users_per_s"]
    worker_s = users / rate
    u = m["file_units_per_user"]
    wru, rru = users * u["wru"], users * u["rru"]
    shard_wall, bound = bounded(worker_s / min(concurrency, shards), wru, rru, table)
    wall = math.ceil(ranges / concurrency) * range_s + shard_wall
    cost = {
        "lambda": (worker_s + ranges * range_s) * LAMBDA_GB * PRICES["lambda_gb_s"]
        + (ranges + shards + 2) * PRICES["lambda_request"],
        "dynamodb": wru * PRICES["dynamodb_wru"] + rru * PRICES["dynamodb_rru"],
        "sqs": users * m["file_sqs_per_user"] * PRICES["sqs_request"],
        "step_functions": ((ranges + shards) * 4 + 10) * PRICES["sfn_transition"],
        "s3": (ranges * shards + users / 1000) * PRICES["s3_put"] + (ranges + ranges * shards) * PRICES["s3_get"],
    }
    return {
        "table": table["name"],
        "ranges": ranges,
        "range_child_s": range_s,
        "shards": shards,
        "wall_min": wall / 60,
        "bound_by": bound,
        "wru": wru,
        "rru": rru,
        "writes_per_s": wru / shard_wall,
        "cost": cost,
        "total": sum(cost.values()),
    }


def stream_projection(m: dict[str, Any], files_per_min: int, users_per_file: int) -> dict[str, Any]:
    """1,000 small files a minute, sustained, each on its own invocation: concurrency and cost a day."""
    per_file_s = m["small_file_s"]
    concurrency = files_per_min / 60 * per_file_s
    files_day = files_per_min * 1440
    u = m["small_file_units"]
    cost = {
        "lambda": files_day * (per_file_s * LAMBDA_GB * PRICES["lambda_gb_s"] + PRICES["lambda_request"]),
        "dynamodb": files_day * (u["wru"] * PRICES["dynamodb_wru"] + u["rru"] * PRICES["dynamodb_rru"]),
        "sqs": files_day * (u["sqs"] + 0.1) * PRICES["sqs_request"],  # + the notification queue's receive/delete
        "s3": files_day * (u["s3_put"] * PRICES["s3_put"] + u["s3_get"] * PRICES["s3_get"]),
    }
    return {
        "per_file_s": per_file_s,
        "concurrent_invocations": concurrency,
        "writes_per_s": files_day * u["wru"] / DAY,
        "cost_per_day": cost,
        "total_per_day": sum(cost.values()),
    }


def units_per_user(workers: list[Worker], users: int) -> dict[str, float]:
    units = sum((w.meter.units for w in workers), Counter())
    return {k: v / users for k, v in units.items()}


def measure_units(files: list[bytes], latency: dict[str, float]) -> dict[str, Any]:
    """One worker with no latency: capacity units per user of a file run and of the schedule a week later."""
    w = Worker({k: 0.0 for k in latency})
    w.land("incoming/slice.csv", files[0])
    run = w.file_run("incoming/slice.csv")
    file_units = dict(w.meter.units)
    file_sqs = w.meter.calls["SendMessageBatch"]
    w.meter.units.clear()
    w.meter.calls.clear()
    # The schedule's risk writes, apart from the marks of messages sent.
    before = sum(wru(item_bytes(i)) for i in w.tables.risks.values())
    sched = w.schedule(AS_OF.timestamp() + 7 * DAY)
    marks = w.meter.calls["UpdateItem"]
    sched_units = dict(w.meter.units)
    users, s_users = run["users_scored"], sched["users_scored"]
    written = s_users - sched.get("risk_writes_skipped", 0)
    risk_wru = (sched_units.get("wru", 0.0) - marks * before / max(1, len(w.tables.risks))) / s_users
    return {
        "file_units_per_user": {"wru": file_units["wru"] / users, "rru": file_units["rru"] / users},
        "file_sqs_per_user": file_sqs / users,
        "schedule_units_per_user": {
            "wru_risk": max(0.0, risk_wru),
            "wru_other": (sched_units.get("wru", 0.0) / s_users) - max(0.0, risk_wru),
            "rru": sched_units.get("rru", 0.0) / s_users,
        },
        "schedule_sqs_per_user": w.meter.calls["SendMessageBatch"] / s_users,
        "schedule_skip_share": 1 - written / s_users,
        "schedule_messages_per_user": sum(sched["messages_sent"].values()) / s_users,
        "risk_item_wru": round(before / max(1, len(w.tables.risks)), 2),
    }


def small_file(latency: dict[str, float], population: EventBatch, tmp: Path, users: int) -> dict[str, Any]:
    """One small file of `users` known users (a minute of a stream) on a warm worker: seconds and units."""
    import numpy as np

    w = Worker(latency)
    w.land("incoming/base.csv", csv_of(population, tmp / "base.csv"))
    w.file_run("incoming/base.csv")
    picked = population.select(population.user_index < users)
    _, first = np.unique(picked.user_index, return_index=True)
    one = picked.select(np.isin(np.arange(len(picked)), first))
    w.now += 3600
    one.time[:] = w.now - 30
    w.land("incoming/minute.csv", csv_of(one, tmp / "minute.csv"))
    w.meter.calls.clear()
    w.meter.units.clear()
    cpu, waited = time.thread_time(), w.meter.waited
    w.file_run("incoming/minute.csv")
    took = time.thread_time() - cpu + w.meter.waited - waited  # on a core of its own: CPU plus waiting on AWS
    calls = w.meter.calls
    return {
        "small_file_s": took,
        "small_file_units": {
            "wru": w.meter.units["wru"],
            "rru": w.meter.units["rru"],
            "sqs": calls["SendMessageBatch"],
            "s3_put": calls["S3.PUT"] + calls["S3.LIST"],
            "s3_get": calls["S3.GET"],
        },
        "small_file_calls": dict(calls),
    }


def reader_rate(path: Path) -> float:
    """Events per second the reader validates on one core (the range child's work)."""
    from chalicelib.ingest import read_event_file

    started = time.perf_counter()
    result = read_event_file(path)
    took = time.perf_counter() - started
    result.rejects.close()
    return len(result.events) / took


# ---- printing ----------------------------------------------------------------------------------------------------
def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header, *[[f"{c:,.2f}" if isinstance(c, float) else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users-per-worker", type=int, default=1000, help="each worker's slice (a chunk or more)")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=2, help="rounds per worker count; the fastest is kept")
    parser.add_argument("--latencies-ms", default="5,10", help="per DynamoDB call")
    parser.add_argument("--sqs-ms", type=float, default=20.0, help="per SendMessageBatch call")
    parser.add_argument("--s3-ms", type=float, default=20.0, help="per S3 request")
    parser.add_argument("--week-users", type=int, default=4000, help="population of the week after a backfill")
    parser.add_argument("--target-users", type=float, default=10e6)
    parser.add_argument("--map-concurrency", type=int, default=100, help="assumed children running at once")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    logger.setLevel("ERROR")
    data_dir = ROOT / "data"
    data_dir.mkdir(exist_ok=True)
    counts = tuple(int(n) for n in args.workers.split(","))
    n_max = max(counts)
    population = generate_events(args.users_per_worker * n_max, 90, 1, AS_OF)
    files = [csv_of(s, data_dir / f"scale-slice-{i}.csv") for i, s in enumerate(slices(population, n_max))]
    report: dict[str, Any] = {"prices": {"date": PRICES_DATE, **PRICES}}

    print(f"population: {len(population.user_ids):,} users, {len(population):,} events in {n_max} slices")
    warm = Worker({"ddb": 0.0, "sqs": 0.0, "s3": 0.0})  # imports, model load and first calls, before any timing
    warm.land("incoming/slice.csv", files[0])
    warm.file_run("incoming/slice.csv")
    warm.schedule(AS_OF.timestamp() + DAY)
    by_latency = {}
    for ms in (float(x) for x in args.latencies_ms.split(",")):
        latency = {"ddb": ms / 1000, "sqs": args.sqs_ms / 1000, "s3": args.s3_ms / 1000}
        res = scaling(files, latency, counts, args.repeats)
        by_latency[ms] = res
        print(f"\nDynamoDB {ms:g} ms, SQS {args.sqs_ms:g} ms, S3 {args.s3_ms:g} ms per call (users/s)")
        print(scaling_table(res, "file"))
        print(scaling_table(res, "schedule"))
        one = res[counts[0]]
        before = calls_before_scale_out(one)
        print(
            "DynamoDB calls per user: file run",
            per_user(one["file_calls"], one["file_users"]),
            f"(the design before the scale-out on these users and messages: {before['file']:.3f}; 2.40 on"
            " scripts/benchmark.py's population); schedule",
            per_user(one["schedule_calls"], one["schedule_users"]),
            f"(before: {before['schedule']:.3f}; 1.19)",
        )
    report["scaling"] = {
        ms: {
            n: {k: v for k, v in r.items() if not k.endswith("_calls")}
            | {"file_calls": dict(r["file_calls"]), "schedule_calls": dict(r["schedule_calls"])}
            for n, r in res.items()
        }
        for ms, res in by_latency.items()
    }

    week_pop = generate_events(args.week_users, 90, 2, AS_OF)
    share = daily_active_share(week_pop)
    quiet = week_after_backfill(week_pop, data_dir, 0.0)
    trickle = week_after_backfill(week_pop, data_dir, share)
    report["risk_writes_week"] = {"no_events": quiet, "trickle": trickle}
    print(f"\nrisk writes a week after a backfill of {len(week_pop.user_ids):,} users (7 daily schedules)")
    print(
        table(
            [
                ["no new events", quiet["schedule_risk_writes_saved"], quiet["all_risk_writes_saved"]],
                [
                    f"{share:.1%} of users back each day",
                    trickle["schedule_risk_writes_saved"],
                    trickle["all_risk_writes_saved"],
                ],
            ],
            ["week", "schedule writes saved", "all risk writes saved"],
        )
    )

    latency10 = {"ddb": 0.010, "sqs": args.sqs_ms / 1000, "s3": args.s3_ms / 1000}
    units = measure_units(files, latency10)
    reader = reader_rate(data_dir / "scale-slice-0.csv")
    small = small_file(latency10, week_pop, data_dir, 20)
    # The projection's per-worker rate: the fewest workers measured, at the slowest DynamoDB latency.
    slowest = by_latency[max(by_latency)][counts[0]]
    measured = {
        **units,
        **small,
        "reader_events_per_s": reader,
        "file_users_per_s": slowest["file_own_users_per_s"],
        "schedule_users_per_s": slowest["schedule_own_users_per_s"],
    }
    report["measured_for_projection"] = measured
    saved = trickle["schedule_risk_writes_saved"]
    users, conc = args.target_users, args.map_concurrency
    sched = schedule_projection(measured, users, saved)
    sched_warm = schedule_projection(measured, users, saved, warm_for(sched["wru"], sched["rru"], 20 * 60))
    backfill = backfill_projection(measured, users, 10 * users, conc, 64, 256)
    backfill_warm = backfill_projection(
        measured, users, 10 * users, conc, 64, 256, warm_for(backfill["wru"], backfill["rru"], 45 * 60)
    )
    stream = stream_projection(measured, 1000, 20)
    report["projection"] = {
        "schedule": [sched, sched_warm],
        "backfill": [backfill, backfill_warm],
        "stream": stream,
    }
    print(
        f"\nprojection at {users:,.0f} users from one worker's own rate at 10 ms per DynamoDB call "
        f"(file {measured['file_users_per_s']:.0f}, schedule {measured['schedule_users_per_s']:.0f} users/s), "
        f"at most {conc} children at once; prices us-east-1 checked {PRICES_DATE}"
    )
    rows = [
        [
            f"daily schedule, {p['table']}",
            p["wall_min"],
            f"{p['bound_by']} ({p['segments']} segments)",
            p["writes_per_s"],
            p["total"],
            "30 min, $10",
        ]
        for p in (sched, sched_warm)
    ]
    rows += [
        [f"backfill 100 M events, {p['table']}", p["wall_min"], p["bound_by"], p["writes_per_s"], p["total"], "60 min"]
        for p in (backfill, backfill_warm)
    ]
    rows.append(
        [
            "1,000 files a minute of 20 users, a day",
            "sustained",
            f"{stream['concurrent_invocations']:.1f} busy",
            stream["writes_per_s"],
            stream["total_per_day"],
            "no listing grows",
        ]
    )
    print(table(rows, ["run", "wall (min)", "bound by", "writes/s", "cost ($)", "target"]))
    for name, p in (("schedule", sched_warm), ("backfill", backfill_warm), ("stream, a day", stream)):
        cost = p.get("cost", p.get("cost_per_day"))
        print(f"  {name}: " + ", ".join(f"{k} ${v:,.2f}" for k, v in cost.items()))
    print(
        f"  children busy for the schedule within 30 min: {users / (measured['schedule_users_per_s'] * 1800):,.0f};"
        f" shards for the backfill within 45 min: {users / (measured['file_users_per_s'] * 2700):,.0f};"
        f" a partition takes {PARTITION_WRU_S:,.0f} writes/s, so {sched_warm['writes_per_s'] / PARTITION_WRU_S:,.0f}"
        " partitions or more for the schedule's rate"
    )

    if not args.skip_memory:
        report["memory"] = {
            "range_child_64mib": range_child_peak_rss(64 * 2**20, data_dir),
            "shard_child": shard_child_peak_rss(40_000, 400_000, data_dir),
        }
        for name, m in report["memory"].items():
            print(f"peak RSS, {name}: {m['peak_rss_mib']:.0f} MiB ({m['what']})")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"benchmark process peak RSS {peak:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main()
