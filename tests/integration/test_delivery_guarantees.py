"""Order, concurrency and time limits: whatever the order, the overlap or the interruptions, the result is the same."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter

import numpy as np
import pytest
from moto.dynamodb.models import DynamoDBBackend

from chalicelib.runs.deadline import Deadline, RunInterrupted
from chalicelib.scoring.events import EVENT_TYPES, SECONDS_PER_DAY
from chalicelib.scoring.state import StateBatch, col
from chalicelib.settings import ConfigError
from churnguard_offline.bootstrap import ensure_resources
from churnguard_offline.lambda_events import stage_timeout
from tests.integration.conftest import (
    AS_OF,
    Aws,
    assert_every_user_once_and_every_message_once,
    csv_bytes,
    make_pipeline,
)

HOUR = 3600.0
COUNTS = [col(f"count_{t}") for t in EVENT_TYPES]


def second_world(aws: Aws, suffix: str) -> Aws:
    """Another bucket, tables and queues in the same embedded AWS, for processing the same files another way."""
    s = aws.settings
    settings = dataclasses.replace(
        s,
        behaviour_bucket=f"{s.behaviour_bucket}-{suffix}",
        risk_table=f"{s.risk_table}-{suffix}",
        state_table=f"{s.state_table}-{suffix}",
        queue_high=f"{s.queue_high}-{suffix}",
        queue_medium=f"{s.queue_medium}-{suffix}",
    )
    ensure_resources(settings)
    aws.strict.same_policy_as(settings.behaviour_bucket, s.behaviour_bucket)
    return Aws(settings, aws.strict)


def outcome(aws: Aws) -> tuple[StateBatch, dict[str, dict]]:
    """Return the stored state and the risk items of a world."""
    states = sorted(aws.items(aws.settings.state_table), key=lambda i: i["user_id"])
    state = StateBatch.from_blobs([i["user_id"] for i in states], [bytes(i["state"].value) for i in states])
    return state, {i["user_id"]: i for i in aws.items(aws.settings.risk_table)}


def assert_same_outcome(a: Aws, b: Aws) -> None:
    state_a, risk_a = outcome(a)
    state_b, risk_b = outcome(b)
    assert state_a.user_ids == state_b.user_ids
    np.testing.assert_array_equal(state_a.values[:, COUNTS], state_b.values[:, COUNTS])
    np.testing.assert_allclose(state_a.values, state_b.values, rtol=1e-9)
    assert risk_a.keys() == risk_b.keys()
    for uid, item in risk_a.items():
        other = risk_b[uid]
        assert (item["as_of"], item["risk_tier"], item["value_tier"]) == (
            other["as_of"],
            other["risk_tier"],
            other["value_tier"],
        )
        assert float(item["churn_probability"]) == pytest.approx(float(other["churn_probability"]), abs=1e-5)


def day_of_files(batch, tmp_path) -> list[tuple[str, bytes, float]]:
    """A year's backfill and the last day in six four-hour deltas: (key, data, landing time) each."""
    end = AS_OF.timestamp()
    files = [
        ("incoming/backfill.csv", csv_bytes(batch.select(batch.time <= end - 24 * HOUR), tmp_path), end - 24 * HOUR)
    ]
    for w in range(6):
        lo, hi = end - 24 * HOUR + 4 * HOUR * w, end - 24 * HOUR + 4 * HOUR * (w + 1)
        part = batch.select((batch.time > lo) & (batch.time <= hi))
        files.append((f"incoming/day/{w}.csv", csv_bytes(part, tmp_path), hi))
    return files


def land_and_process(world: Aws, files, order) -> list[dict]:
    """Land and process the files in the given order, in one container; return the run summaries."""
    pipeline = make_pipeline(world.settings)
    summaries = []
    for i in order:
        key, data, landed = files[i]
        world.land(key, data)
        summaries.append(pipeline.process_object(key, None, landed))
    return summaries


def test_a_days_files_in_any_order_give_the_same_state_and_scores(aws, small, tmp_path, no_sleep):
    # GIVEN a backfill and a day of deltas, processed in landing order in one world and shuffled in another
    files = day_of_files(small, tmp_path)
    in_order = land_and_process(aws, files, range(len(files)))
    shuffled_world = second_world(aws, "shuffled")
    shuffled = land_and_process(shuffled_world, files, [6, 2, 0, 5, 1, 3, 4])

    # THEN both hold the same state and the same scores, each as of the user's latest file
    assert_same_outcome(aws, shuffled_world)
    assert all(s["status"] == "succeeded" for s in in_order + shuffled)
    # AND the late files neither rolled scores back nor were ignored: their users were scored again, newer
    late = sum(s["delivery"].get("rescored_at_newer_as_of", 0) for s in shuffled)
    assert late > 0
    assert sum(s["delivery"].get("rescored_at_newer_as_of", 0) for s in in_order) == 0
    _, risk = outcome(shuffled_world)
    assert max(i["as_of"] for i in risk.values()) == "2026-06-01T00:00:00Z"


def test_a_late_file_never_rolls_a_score_back_or_sends_a_stale_message(aws, small, tmp_path, no_sleep):
    # GIVEN users scored by the schedule a day after their last file
    pipeline = make_pipeline(aws.settings)
    end = AS_OF.timestamp()
    early = small.select(small.time <= end - 2 * HOUR)
    late = small.select(small.time > end - 2 * HOUR)
    aws.land("incoming/early.csv", csv_bytes(early, tmp_path))
    pipeline.process_object("incoming/early.csv", None, end - 2 * HOUR)
    pipeline.run_schedule(end + SECONDS_PER_DAY)
    aws.drain_all()

    # WHEN a file that landed before the schedule is processed only now
    aws.land("incoming/late.csv", csv_bytes(late, tmp_path))
    summary = pipeline.process_object("incoming/late.csv", None, end)

    # THEN its users keep the schedule's newer as_of, scored again with their new events
    _, risk = outcome(aws)
    assert {risk[u]["as_of"] for u in late.user_ids} == {"2026-06-02T00:00:00Z"}
    assert summary["delivery"]["rescored_at_newer_as_of"] == len(late.user_ids)
    for uid in late.user_ids:
        assert risk[uid]["scored_state_version"] == 2  # the early file, then the late one
    # AND no message carries the late file's older as_of
    messages = aws.drain_all()
    assert all(m["as_of"] == "2026-06-02T00:00:00Z" for m in messages)


@pytest.fixture
def atomic_item_writes(monkeypatch):
    """DynamoDB checks a condition and writes an item as one step; moto's in-memory tables need a lock for that."""
    lock = threading.RLock()
    for name in ("put_item", "update_item", "get_item", "delete_item"):
        real = getattr(DynamoDBBackend, name)

        def locked(self, *args, _real=real, **kwargs):
            with lock:
                return _real(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, locked)


def test_overlapping_files_processed_at_once_lose_no_update(aws, small, tmp_path, no_sleep, atomic_item_writes):
    # GIVEN four files of the same users (events dealt at random), processed one after another in one world
    rng = np.random.default_rng(3)
    part = rng.integers(0, 4, len(small))
    files = [(f"incoming/p{i}.csv", csv_bytes(small.select(part == i), tmp_path), AS_OF.timestamp()) for i in range(4)]
    sequential = second_world(aws, "sequential")
    land_and_process(sequential, files, range(4))

    # WHEN the same four files are processed at the same time by four containers in another
    pipelines = [make_pipeline(aws.settings) for _ in files]
    for key, data, _ in files:
        aws.land(key, data)
    start = threading.Barrier(len(files))
    summaries: list[dict] = [{}] * len(files)

    def run(i: int) -> None:
        start.wait()
        key, _, landed = files[i]
        summaries[i] = pipelines[i].process_object(key, None, landed)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(files))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # THEN nothing was lost: the same state and scores as sequential processing, each score from the final state
    assert [s["status"] for s in summaries] == ["succeeded"] * 4
    assert sum(s["delivery"].get("write_conflicts", 0) for s in summaries) > 0  # the runs did race
    assert_same_outcome(aws, sequential)
    bodies = assert_every_user_once_and_every_message_once(aws, small, summaries)
    # AND the claim on the risk item let only one of the four runs contact each user (the cooldown)
    assert max(Counter(b["user_id"] for b in bodies).values()) == 1


class Budget:
    """A Lambda context's time left: plenty for `chunks` chunks, then nothing.

    A run asks before each chunk after its first (the first always runs), so the first `chunks - 1` answers
    leave plenty of time.
    """

    def __init__(self, chunks: int) -> None:
        self.checks = 0
        self.chunks = chunks

    def __call__(self) -> float:
        self.checks += 1
        return 900.0 if self.checks < self.chunks else 1.0


def test_a_run_out_of_time_checkpoints_and_the_next_invocation_finishes_it(
    aws, small, tmp_path, no_sleep, chunks_of_fifty
):
    # GIVEN an invocation with time for two chunks of fifty users
    pipeline = make_pipeline(aws.settings)
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))

    # WHEN it runs, it stops cleanly at a checkpoint
    with pytest.raises(RunInterrupted) as stopped:
        pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp(), Deadline(Budget(2)))
    assert stopped.value.done == 2
    assert len(aws.keys("checkpoints/")) == 1 and aws.ledger() == []

    # AND the next invocation continues from it and finishes, each user merged and messaged once
    summary = make_pipeline(aws.settings).process_object("incoming/a.csv", None, AS_OF.timestamp())
    assert summary["status"] == "succeeded" and summary["resumed_after_chunks"] == 2
    assert summary["users_scored"] == len(small.user_ids)
    bodies = assert_every_user_once_and_every_message_once(aws, small, [summary])
    assert len(bodies) == sum(summary["messages_sent"].values())
    assert aws.keys("checkpoints/") == []


def test_an_invocation_shorter_than_the_checkpoint_reserve_is_refused_before_it_reads_anything(
    aws, client, small, tmp_path
):
    # GIVEN an invocation whose context leaves less time than the checkpoint reserve: no chunk could ever run
    event = aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    # THEN it fails at once with the setting to change, instead of checkpointing "after 0 chunks" on every retry
    with stage_timeout(1), pytest.raises(ConfigError, match="CHECKPOINT_RESERVE_SECONDS"):
        client.lambda_.invoke("on_behaviour_file", event)
    assert aws.items(aws.settings.state_table) == [] and aws.keys("checkpoints/") == []

    # AND with a timeout that fits, the same event does the whole run
    [summary] = client.lambda_.invoke("on_behaviour_file", event).payload
    assert summary["status"] == "succeeded" and summary["users_scored"] == len(small.user_ids)


def test_the_schedule_checkpoints_its_scan_and_a_redelivered_schedule_does_nothing(
    aws, small, tmp_path, no_sleep, chunks_of_fifty
):
    # GIVEN known users, and a schedule invocation with time for two pages of fifty
    pipeline = make_pipeline(aws.settings)
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())
    aws.drain_all()
    at = AS_OF.timestamp() + 7 * SECONDS_PER_DAY
    with pytest.raises(RunInterrupted):
        pipeline.run_schedule(at, Deadline(Budget(2)))

    # WHEN the same schedule event is delivered again, twice
    summary = make_pipeline(aws.settings).run_schedule(at)
    again = make_pipeline(aws.settings).run_schedule(at)

    # THEN the second finished the scan from its checkpoint, and the third did nothing
    assert summary["status"] == "succeeded" and summary["resumed_after_chunks"] == 2
    assert summary["users_scored"] == len(small.user_ids)
    assert again["status"] == "duplicate"
    _, risk = outcome(aws)
    # each item is the schedule's, or the earlier one the schedule would not have changed (its write skipped)
    written = sum(i["as_of"] == "2026-06-08T00:00:00Z" for i in risk.values())
    assert written + summary["risk_writes_skipped"] == len(small.user_ids)
    messages = aws.drain_all()
    assert len(messages) == len({m["message_id"] for m in messages}) == sum(summary["messages_sent"].values())


def _multipart(aws: Aws, key: str, data: bytes, part_bytes: int) -> dict:
    """Upload `data` in parts of `part_bytes` with a full-object CRC32, as transfer managers can; return the ETag."""
    s3, bucket = aws.s3, aws.settings.behaviour_bucket
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
    parts = []
    for number, start in enumerate(range(0, len(data), part_bytes), 1):
        part = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[start : start + part_bytes],
            ChecksumAlgorithm="CRC32",
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]})
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
        ChecksumType="FULL_OBJECT",
    )
    return done["ETag"].strip('"')


def test_a_byte_identical_multipart_reupload_is_the_same_file_though_its_etag_differs(aws, small, tmp_path):
    # GIVEN a behaviour file of over 11 MiB (the small population's rows, repeated)
    header, rows = csv_bytes(small, tmp_path).split(b"\n", 1)
    body = header + b"\n" + rows * (1 + (11 << 20) // len(rows))
    pipeline = make_pipeline(aws.settings)
    # WHEN it is uploaded in 5 MiB parts and processed, then uploaded again byte for byte in 6 MiB parts
    first_etag = _multipart(aws, "incoming/export.csv", body, 5 << 20)
    first = pipeline.process_object("incoming/export.csv", None, AS_OF.timestamp())
    second_etag = _multipart(aws, "incoming/export.csv", body, 6 << 20)
    second = pipeline.process_object("incoming/export.csv", None, AS_OF.timestamp())

    # THEN the ETags differ, but the identity (S3's full-object checksum with the size) is the same: a duplicate
    assert first_etag != second_etag and first["status"] == "succeeded"
    assert first["object"]["identity"].startswith("crc32-") and first["object"]["identity"].endswith(f"-{len(body)}")
    assert second["status"] == "duplicate" and second["run_id"] == first["run_id"]
    states = aws.items(aws.settings.state_table)
    assert sum(int(s["events"]) for s in states) == first["rows"]["scored"]
    # AND the schedule's reconciliation listing, which sees ETags only, finds the upload recorded under its own ETag
    listed, _ = pipeline.bucket.listing("incoming/", None, 10)
    assert [pipeline.tables.ledger.find(item.key, item.etag) is not None for item in listed] == [True]


def test_a_bucket_without_versioning_is_refused_loudly_naming_it(aws, small, tmp_path):
    # GIVEN the stage's bucket with versioning suspended, and a landed file
    aws.s3.put_bucket_versioning(Bucket=aws.settings.behaviour_bucket, VersioningConfiguration={"Status": "Suspended"})
    aws.land("incoming/a.csv", csv_bytes(small, tmp_path))
    pipeline = make_pipeline(aws.settings)
    # WHEN a file run or the schedule starts THEN each refuses with a ConfigError naming the bucket
    with pytest.raises(ConfigError, match=f"bucket {aws.settings.behaviour_bucket} does not keep versions"):
        pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())
    with pytest.raises(ConfigError, match="versioning Suspended"):
        pipeline.run_schedule(AS_OF.timestamp())
    assert aws.items(aws.settings.state_table) == []
    # AND once versioning is on again, the same container goes ahead
    aws.s3.put_bucket_versioning(Bucket=aws.settings.behaviour_bucket, VersioningConfiguration={"Status": "Enabled"})
    assert pipeline.process_object("incoming/a.csv", None, AS_OF.timestamp())["status"] == "succeeded"
