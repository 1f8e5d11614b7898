"""replay tells a finished run from one that has not finished and from an id no run has."""

from __future__ import annotations

import pytest

from chalicelib.errors import InputError


def test_replay_of_an_id_no_run_has_is_refused_saying_so(world):
    # GIVEN a bucket with no record of the run  WHEN it is replayed  THEN no run, not "nothing left"
    with pytest.raises(InputError, match=r"s3://.*/dead-letter/obj-typo\.json: no run obj-typo: ") as exc:
        world.pipeline.replay("obj-typo")
    assert "nothing left" not in str(exc.value)
    # AND nothing was written for it
    assert "obj-typo" not in world.bucket.runs


def test_replay_of_a_finished_run_says_it_has_nothing_left_and_changes_nothing(world, population, tmp_path):
    # GIVEN a run that succeeded
    world.land("incoming/day.csv", population, tmp_path)
    summary = world.process("incoming/day.csv")
    assert summary["status"] == "succeeded"
    before = dict(world.bucket.runs[summary["run_id"]])
    # WHEN it is replayed
    replayed = world.pipeline.replay(summary["run_id"])
    # THEN the answer says how it ended, and its record is as it was
    assert replayed == {
        "run_id": summary["run_id"],
        "trigger": "replay",
        "status": "nothing_to_replay",
        "run_status": "succeeded",
    }
    assert world.bucket.runs[summary["run_id"]] == before


def test_replay_of_a_run_that_has_not_finished_is_refused(world):
    world.bucket.checkpoint_put("obj-running", {"run_id": "obj-running", "done": 1, "totals": {}})
    with pytest.raises(InputError, match="run obj-running has not finished yet"):
        world.pipeline.replay("obj-running")
