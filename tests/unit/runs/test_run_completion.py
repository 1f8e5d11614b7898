"""How a run ends, on fakes: closed exposures kept before the writes that close them, and the bookkeeping (run
record, checkpoint, ledger, lift report) finished by the redo whatever step the attempt before it died at."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.unit.runs.test_runs_on_fakes import AS_OF, SETTINGS, World

DAY = 86400.0
# Re-scored after every cooldown is over: the schedule exposes users anew, closing their first exposures.
LATER = AS_OF.timestamp() + 40 * DAY
TIMES = ("duration_s", "finished_at")


class Crash(Exception):
    """The process dies here."""


def die_once_at(world: World, monkeypatch, method: str) -> None:
    """Make the bucket's `method` (or the ledger's, `ledger.put`) kill the process the first time it is called."""
    store = world.tables.ledger if method.startswith("ledger.") else world.bucket
    method = method.removeprefix("ledger.")
    real = getattr(store, method)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash(f"killed in {method}")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, method, dying)


def without_times(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMES}


@pytest.fixture
def chunked() -> World:
    """A world that works in three chunks (or pages) of forty users."""
    return World(replace(SETTINGS, chunk_users=40))


def exposed_then_rescored(world: World, population, tmp_path) -> str:
    """Expose users with a file, then let the schedule re-expose them; return the schedule's run id."""
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    return world.pipeline.run_schedule(at=LATER)["run_id"]


def test_a_schedule_killed_after_re_exposing_users_keeps_every_exposure_it_closed(population, tmp_path, monkeypatch):
    # GIVEN the closed exposures of a clean schedule that re-exposes users
    clean = World(replace(SETTINGS, chunk_users=40))
    exposed_then_rescored(clean, population, tmp_path)
    closed = sorted((e["user_id"], e["exposed_at"]) for e in clean.bucket.every_closed())
    assert len(closed) > 10

    # WHEN the same schedule dies at its first checkpoint, after its first page's risk writes, and comes again
    world = World(replace(SETTINGS, chunk_users=40))
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    die_once_at(world, monkeypatch, "checkpoint_put")
    with pytest.raises(Crash):
        world.pipeline.run_schedule(at=LATER)
    world.pipeline.run_schedule(at=LATER)

    # THEN every exposure it replaced is kept, each once in the lift report
    assert sorted({(e["user_id"], e["exposed_at"]) for e in world.bucket.every_closed()}) == closed
    assert world.bucket.lift == clean.bucket.lift


@pytest.mark.parametrize("method", ["run_record_put", "checkpoint_delete", "ledger.put"])
def test_a_file_run_killed_in_its_bookkeeping_is_finished_by_its_redo(
    chunked, population, tmp_path, monkeypatch, method
):
    # GIVEN the record a clean run of a three-chunk file leaves
    clean = World(replace(SETTINGS, chunk_users=40))
    clean.land("incoming/day.csv", population, tmp_path)
    expected = clean.process("incoming/day.csv")

    # WHEN the same run dies at one step of its bookkeeping, and the event comes again
    chunked.land("incoming/day.csv", population, tmp_path)
    die_once_at(chunked, monkeypatch, method)
    with pytest.raises(Crash):
        chunked.process("incoming/day.csv")
    chunked.process("incoming/day.csv")

    # THEN the run record, ledger and checkpoints are a clean run's
    run_id = expected["run_id"]
    stored = without_times(chunked.bucket.runs[run_id])
    stored.pop("resumed_after_chunks", None)
    assert stored == without_times(clean.bucket.runs[run_id])
    assert chunked.tables.ledger == clean.tables.ledger
    assert chunked.bucket.checkpoints == {}
    # AND a third delivery finds the run done
    assert chunked.process("incoming/day.csv")["status"] == "duplicate"


def test_a_ledger_record_without_its_run_record_gets_one_and_loses_its_stale_checkpoint(world, population, tmp_path):
    # GIVEN a finished file whose run record is missing and whose checkpoint is still there (an older order's crash)
    world.land("incoming/day.csv", population, tmp_path)
    run_id = world.process("incoming/day.csv")["run_id"]
    del world.bucket.runs[run_id]
    world.bucket.checkpoints[run_id] = {"run_id": run_id, "done": 1, "totals": {}}

    # WHEN the event comes again
    again = world.process("incoming/day.csv")

    # THEN it is a duplicate that repairs the bookkeeping: a run record from the ledger, no checkpoint
    assert again["status"] == "duplicate"
    assert world.bucket.runs[run_id]["status"] == "succeeded"
    assert world.bucket.runs[run_id]["repaired"] == "from its ledger record"
    assert world.bucket.checkpoints == {}


@pytest.mark.parametrize("method", ["lift_report_put", "run_record_put", "checkpoint_delete"])
def test_a_schedule_killed_in_its_bookkeeping_is_finished_by_its_redo(population, tmp_path, monkeypatch, method):
    # GIVEN the record and lift report of a clean schedule over three pages
    clean = World(replace(SETTINGS, chunk_users=40))
    run_id = exposed_then_rescored(clean, population, tmp_path)

    # WHEN the same schedule dies at one step of its bookkeeping, and the event comes again
    world = World(replace(SETTINGS, chunk_users=40))
    world.land("incoming/day.csv", population, tmp_path)
    world.process("incoming/day.csv")
    die_once_at(world, monkeypatch, method)
    with pytest.raises(Crash):
        world.pipeline.run_schedule(at=LATER)
    world.pipeline.run_schedule(at=LATER)

    # THEN the run record (but for where the redo resumed), the lift report and the checkpoints are a clean run's
    stored = without_times(world.bucket.runs[run_id])
    stored.pop("resumed_after_chunks", None)
    assert stored == without_times(clean.bucket.runs[run_id])
    assert world.bucket.lift == clean.bucket.lift
    assert world.bucket.checkpoints == {}
