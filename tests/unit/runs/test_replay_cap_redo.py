"""A replay that dies after sending and is run again: the run's message cap still holds."""

from __future__ import annotations

import contextlib

from tests.unit.runs.test_runs_on_fakes import World, capped


class Crash(Exception):
    """The replay's process dies."""


def test_a_replay_redone_after_a_crash_sends_no_more_than_the_runs_cap(population, tmp_path):
    # GIVEN a run that claimed fewer messages than its cap while 10 users it would message were dead-lettered
    probe = World()
    probe.land("incoming/day.csv", population, tmp_path)
    probe.process("incoming/day.csv")
    messaged = [b["user_id"] for b in probe.queues.bodies()]
    failing = set(messaged[:10])
    cap = len(messaged) - len(failing) + 3  # the replay may send 3 more
    world = capped(World(), cap)
    world.tables.fail_states = set(failing)
    world.land("incoming/day.csv", population, tmp_path)
    summary = world.process("incoming/day.csv")
    assert summary["status"] == "incomplete" and summary["messages_claimed"] == cap - 3
    world.tables.fail_states.clear()
    # WHEN the replay sends its 3 and dies before its bookkeeping (deleting the dead letters, the record)
    delete = world.bucket.dead_letters_delete

    def die(run_id):
        world.bucket.dead_letters_delete = delete
        raise Crash(run_id)

    world.bucket.dead_letters_delete = die
    with contextlib.suppress(Crash):
        world.pipeline.replay(summary["run_id"])
    assert len(world.queues.bodies()) == cap
    # AND the operator runs the replay again
    world.pipeline.replay(summary["run_id"])
    # THEN nothing past the run's cap is sent: the redo counts what the dead attempt already sent
    assert len({b["message_id"] for b in world.queues.bodies()}) <= cap


def test_a_run_redone_after_a_crash_past_its_sends_claims_no_more_than_its_cap(population, tmp_path):
    # GIVEN how many messages each chunk of 40 users claims, uncapped
    probe = World()
    probe.land("incoming/day.csv", population, tmp_path)
    probe.process("incoming/day.csv")
    claimed = [c["totals"].get("messages_claimed", 0) for c in probe.bucket.checkpoint_history]
    assert len(claimed) >= 3 and claimed[0] < claimed[1] < claimed[2]
    # AND a run capped one message past its first two chunks, which dies after sending its second chunk's messages
    # and marking them sent, just before that chunk's checkpoint
    cap = claimed[1] + 1
    world = capped(World(), cap)
    world.land("incoming/day.csv", population, tmp_path)
    put = world.bucket.checkpoint_put

    def die_at_the_second(run_id, record):
        if record["done"] == 2:
            world.bucket.checkpoint_put = put
            raise Crash(run_id)
        put(run_id, record)

    world.bucket.checkpoint_put = die_at_the_second
    with contextlib.suppress(Crash):
        world.process("incoming/day.csv")
    assert len(world.queues.bodies()) == claimed[1]
    # WHEN the redelivery redoes the run from its first checkpoint
    assert world.process("incoming/day.csv")["status"] == "succeeded"
    # THEN the messages the dead attempt sent count against the cap: one more, and no more, goes out
    assert len({b["message_id"] for b in world.queues.bodies()}) == cap
