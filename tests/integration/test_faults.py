"""Faults that outlive their retries: the run ends incomplete, nothing is lost, `replay` finishes it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from chalicelib import aws_dynamodb, aws_sqs, runtime
from chalicelib.cli import main
from chalicelib.state import build_state
from tests.integration.conftest import AS_OF, csv_bytes


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(aws_dynamodb, "sleep", lambda _s: None)
    monkeypatch.setattr(aws_sqs, "sleep", lambda _s: None)


@pytest.fixture
def pipeline(aws, no_sleep):
    runtime.clear()
    yield runtime.get_pipeline()
    runtime.clear()


class Faults:
    """Switchable faults on the pipeline's real (moto-backed) clients."""

    def __init__(self, pipeline, victim: str) -> None:
        self.on = True
        self.victim = victim
        sqs = pipeline.queues.client
        real_send = sqs.send_message_batch
        resource = pipeline.tables.resource
        real_write = resource.batch_write_item

        def send_message_batch(QueueUrl, Entries):
            # The victim's message fails (not the sender's fault) for as long as the fault is on.
            bad = [e for e in Entries if self.on and json.loads(e["MessageBody"])["user_id"] == self.victim]
            good = [e for e in Entries if e not in bad]
            resp = real_send(QueueUrl=QueueUrl, Entries=good) if good else {"Successful": []}
            failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError"} for e in bad]
            return {**resp, "Failed": resp.get("Failed", []) + failed}

        def batch_write_item(RequestItems):
            # The victim's risk item stays unprocessed for as long as the fault is on.
            kept, held = {}, {}
            for table, requests in RequestItems.items():
                for r in requests:
                    hit = (
                        self.on
                        and table == pipeline.tables.risk_table
                        and r["PutRequest"]["Item"]["user_id"] == self.victim
                    )
                    (held if hit else kept).setdefault(table, []).append(r)
            resp = real_write(RequestItems=kept) if kept else {"UnprocessedItems": {}}
            unprocessed = resp.get("UnprocessedItems") or {}
            for table, requests in held.items():
                unprocessed.setdefault(table, []).extend(requests)
            return {**resp, "UnprocessedItems": unprocessed}

        sqs.send_message_batch = send_message_batch
        resource.batch_write_item = batch_write_item


def test_failures_that_outlive_retries_are_dead_lettered_and_replayed_exactly_once(aws, pipeline, population, tmp_path):
    # GIVEN a file whose high-risk users include one whose message and risk item keep failing
    aws.land("incoming/a.csv", csv_bytes(population, tmp_path))
    scores = pipeline.scorer.score(build_state(population), AS_OF.timestamp())
    victim = next(u for u, a in zip(scores.user_ids, scores.actions) if a is not None)
    faults = Faults(pipeline, victim)

    # WHEN the run meets the faults
    summary = pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())

    # THEN it ends incomplete, with the failed write and message kept for replay
    assert summary["status"] == "incomplete"
    assert summary["dead_letter"]["items"] == 1 and summary["dead_letter"]["messages"] == 1
    assert victim not in {i["user_id"] for i in aws.items(aws.settings.risk_table)}
    record = json.loads(aws.get(f"dead-letter/{summary['run_id']}.json"))
    assert record["messages"][0]["body"]["user_id"] == victim
    # AND a redelivered event does not redo the merge
    assert pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())["status"] == "duplicate"

    # WHEN the faults clear and the run is replayed from the command line
    faults.on = False
    assert main(["replay", summary["run_id"]]) == 0

    # THEN every user has exactly one risk item and every message was sent exactly once
    risk = aws.items(aws.settings.risk_table)
    assert len(risk) == len({i["user_id"] for i in risk}) == len(population.user_ids)
    bodies = [m["body"] for tier in ("high", "medium") for m in aws.drain(tier)]
    assert Counter(b["message_id"] for b in bodies).most_common(1)[0][1] == 1
    assert len(bodies) == sum(summary["messages_sent"].values()) + 1
    assert aws.keys("dead-letter/") == []
    assert json.loads(aws.get(f"runs/{summary['run_id']}.json"))["status"] == "replayed"


def test_replay_of_a_run_with_nothing_left_exits_2(aws, pipeline, capsys):
    assert main(["replay", "obj-nothing"]) == 2
    assert "nothing left to replay" in capsys.readouterr().err
