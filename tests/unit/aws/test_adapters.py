"""Adapters retry what a batch call left undone, with backoff, and tell conflicts from faults."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import numpy as np
import pytest
from botocore.exceptions import ClientError

from chalicelib.aws.bucket import HASH_MARK, MAX_KEY_BYTES, derived_key
from chalicelib.aws.queues import RetentionQueues
from chalicelib.aws.tables import BehaviourTables
from chalicelib.retry import Backoff
from chalicelib.runs.ports import CONFLICT, FAILED, RiskWrite


class FakeDynamo:
    """A DynamoDB client: BatchGetItem leaves keys unprocessed `unprocessed` times; PutItem fails with `put_error`."""

    def __init__(self, unprocessed: int = 0, put_error: str | None = None) -> None:
        self.unprocessed = unprocessed
        self.put_error = put_error
        self.meta = self  # the adapter reaches the client as resource.meta.client
        self.client = self

    def batch_get_item(self, RequestItems):
        ((table, request),) = RequestItems.items()
        keys = request["Keys"]
        if self.unprocessed:
            self.unprocessed -= 1
            return {"Responses": {table: []}, "UnprocessedKeys": {table: {**request, "Keys": keys}}}
        items = [{"user_id": k["user_id"], "as_of": "2026-01-01T00:00:00Z"} for k in keys]
        return {"Responses": {table: items}, "UnprocessedKeys": {}}

    def put_item(self, **kwargs):
        self.last_put = kwargs
        if self.put_error:
            raise ClientError({"Error": {"Code": self.put_error, "Message": "no"}}, "PutItem")
        return {}


class FakeSqs:
    """An SQS client that fails the first entry of the first `fail` batches."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.bodies: list[str] = []

    def get_queue_url(self, QueueName):
        return {"QueueUrl": f"https://sqs/{QueueName}"}

    def send_message_batch(self, QueueUrl, Entries):
        failed = []
        if self.fail:
            self.fail -= 1
            failed = [{"Id": Entries[0]["Id"], "SenderFault": False, "Code": "InternalError"}]
        self.bodies += [e["MessageBody"] for e in Entries if e["Id"] not in {f["Id"] for f in failed}]
        return {"Successful": [], "Failed": failed}


@pytest.fixture
def sleeps() -> list[float]:
    """The sleeps the adapters asked for (none is slept)."""
    return []


def tables_of(client: FakeDynamo, slept: list[float] | None = None) -> BehaviourTables:
    """Return a tables adapter over a fake client, recording its sleeps in `slept`."""
    return BehaviourTables(
        client, "state", "risk", 1, 730 * 86400, Backoff(sleep=(slept if slept is not None else []).append)
    )


def test_unprocessed_keys_are_retried_with_backoff_until_read(sleeps):
    tables = tables_of(FakeDynamo(unprocessed=2), sleeps)
    assert sorted(tables.get_risks([f"u{i}" for i in range(3)])) == ["u0", "u1", "u2"]
    assert len(sleeps) == 2
    assert tables.calls["BatchGetItem"] == 3
    assert tables.retries["BatchGetItem.UnprocessedKeys"] == 2


def test_unprocessed_keys_that_never_clear_are_named_unread_not_taken_for_missing_users(sleeps):
    # GIVEN BatchGetItem that keeps every key unprocessed through every retry
    tables = tables_of(FakeDynamo(unprocessed=100), sleeps)
    # WHEN risks and states are read THEN nothing is found and every user is named unread, for the run to redo
    risks = tables.get_risks(["u1", "u2"])
    assert dict(risks) == {} and risks.unread == ["u1", "u2"]
    assert tables.get_states(["u3"]).unread == ["u3"]


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("ConditionalCheckFailedException", CONFLICT),
        ("ProvisionedThroughputExceededException", FAILED),
        ("ThrottlingException", FAILED),
        ("InternalServerError", FAILED),
    ],
)
def test_a_refused_conditional_write_is_a_conflict_and_a_lasting_fault_a_failure(code, outcome):
    tables = tables_of(FakeDynamo(put_error=code))
    assert tables.put_risks([RiskWrite({"user_id": "u1", "as_of": "x"}, expected=3, last_event=0.0)]) == {"u1": outcome}


def test_a_malformed_write_is_a_bug_and_raises():
    tables = tables_of(FakeDynamo(put_error="ValidationException"))
    with pytest.raises(ClientError):
        tables.put_risks([RiskWrite({"user_id": "u1"}, expected=0, last_event=0.0)])


def _message(i: int) -> dict:
    return {"message_id": str(i), "risk_tier": "high", "value_tier": "low", "action": {"channel": "push"}}


def test_failed_message_entries_are_resent_once_each(sleeps):
    sqs = FakeSqs(fail=1)
    queues = RetentionQueues(sqs, {"high": "q-high"}, Backoff(sleep=sleeps.append))
    assert queues.send("high", [_message(i) for i in range(12)]) == (12, [], [])
    assert sorted(json.loads(b)["message_id"] for b in sqs.bodies) == sorted(str(i) for i in range(12))
    assert queues.calls == 3
    assert len(sleeps) == 1


def test_message_entries_that_keep_failing_are_handed_back(sleeps):
    sqs = FakeSqs(fail=100)
    queues = RetentionQueues(sqs, {"high": "q-high"}, Backoff(sleep=sleeps.append))
    sent, failed, refused = queues.send("high", [_message(i) for i in range(3)])
    assert (sent, [m["message_id"] for m in failed], refused) == (2, ["0"], [])


def test_every_float_of_a_risk_item_reaches_dynamodb_as_an_exact_decimal():
    # GIVEN a risk item with a float at the top, one nested, and a numpy float in a list
    client = FakeDynamo()
    item = {"user_id": "u1", "churn_probability": 0.906571, "extra": {"p": 0.25}, "xs": [np.float32(0.5), "a"]}
    # WHEN it is written
    assert tables_of(client).put_risks([RiskWrite(item, expected=0, last_event=0.0)]) == {"u1": "written"}
    # THEN boto3 gets decimals (it refuses floats), each the float's shortest decimal
    stored = client.last_put["Item"]
    assert stored["churn_probability"] == Decimal("0.906571") and stored["extra"] == {"p": Decimal("0.25")}
    assert stored["xs"] == [Decimal("0.5"), "a"] and stored["risk_version"] == 1


@pytest.mark.parametrize(
    ("response", "identity"),
    [
        # a single-part upload: the ETag is the MD5 of the bytes, whatever checksum came with it
        (
            {"ETag": '"5d41402abc4b2a76b9719d911017c592"', "ChecksumCRC32": "NhCmhg=="},
            "5d41402abc4b2a76b9719d911017c592",
        ),
        # a multipart upload with a full-object checksum: the checksum and the size
        (
            {"ETag": '"b809-2"', "ChecksumCRC32": "MEAHhA==", "ChecksumType": "FULL_OBJECT", "ContentLength": 11},
            "crc32-30400784-11",
        ),
        # S3's own CRC64NVME on an upload sent without a checksum
        ({"ETag": '"b809-3"', "ChecksumCRC64NVME": "AAAAAAAAAAE=", "ContentLength": 5}, "crc64nvme-0000000000000001-5"),
        # a composite checksum depends on the part sizes, as the ETag does: the ETag stays
        ({"ETag": '"b809-2"', "ChecksumSHA256": "HEYt2zE5iKutqZrbRBTcbaGaQaK7qNJy5JWD7LTBgT4=-2"}, "b809-2"),
        ({"ETag": '"b809-2"', "ChecksumCRC32": "MEAHhA==", "ChecksumType": "COMPOSITE"}, "b809-2"),
        ({"ETag": '"b809-2"'}, "b809-2"),
        # under SSE-KMS even a single-part ETag is no MD5
        (
            {"ETag": '"abcd"', "ServerSideEncryption": "aws:kms", "ChecksumSHA256": "AAE=", "ContentLength": 2},
            "sha256-0001-2",
        ),
    ],
    ids=[
        "single_part",
        "multipart_full_object",
        "s3_default_crc64nvme",
        "composite_sha256",
        "composite",
        "none",
        "kms",
    ],
)
def test_the_content_identity_is_the_md5_etag_or_else_a_full_object_checksum(response, identity):
    from chalicelib.aws.bucket import content_identity

    assert content_identity(response) == identity


class FakeS3:
    """An S3 client answering GetBucketVersioning with `status`, counting the calls."""

    def __init__(self, status: str | None) -> None:
        import botocore.exceptions

        self.status = status
        self.calls = 0
        self.exceptions = botocore.exceptions

    def get_bucket_versioning(self, Bucket):
        self.calls += 1
        return {"Status": self.status} if self.status else {}


def test_versioning_is_checked_once_per_container_and_a_bucket_without_it_is_refused():
    from chalicelib.aws.bucket import BehaviourBucket
    from chalicelib.settings import ConfigError

    never = BehaviourBucket(FakeS3(None), "acme-behaviour")
    with pytest.raises(ConfigError, match=r"bucket acme-behaviour does not keep versions \(versioning never enabled\)"):
        never.require_versioning()
    client = FakeS3("Enabled")
    versioned = BehaviourBucket(client, "acme-behaviour")
    versioned.require_versioning()
    versioned.require_versioning()
    assert client.calls == 1


def test_a_derived_key_is_the_plain_copy_while_it_fits_and_a_hashed_name_after():
    # GIVEN keys that fit under rejected/ with .csv, one at the edge, and two long ones sharing their head
    short = "incoming/a.csv"
    edge = "incoming/" + "é" * 500 + "xx"  # rejected/ + key + .csv: exactly 1,024 bytes
    long_a = "incoming/" + "é" * 501 + "a"
    long_b = "incoming/" + "é" * 501 + "b"
    assert len(f"rejected/{edge}.csv".encode()) == MAX_KEY_BYTES
    # THEN the short and the edge key keep their plain copy's name
    assert derived_key("rejected/", short, ".csv") == f"rejected/{short}.csv"
    assert derived_key("rejected/", edge, ".csv") == f"rejected/{edge}.csv"
    # AND the long ones get names that fit, end in the key's SHA-256, differ, and come out the same each time
    a, b = derived_key("rejected/", long_a, ".csv"), derived_key("rejected/", long_b, ".csv")
    digest = hashlib.sha256(long_a.encode()).hexdigest()
    assert a.endswith(f"{HASH_MARK}{digest}.csv") and a.startswith("rejected/incoming/éé")
    assert len(a.encode()) <= MAX_KEY_BYTES and len(b.encode()) <= MAX_KEY_BYTES
    assert a != b and a == derived_key("rejected/", long_a, ".csv")
