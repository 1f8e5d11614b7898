"""S3 adapter: behaviour files in, rejected rows, run summaries, ledger and quarantine out."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config

from chalicelib.errors import ChurnGuardError
from chalicelib.retry import MAX_ATTEMPTS

# Adaptive mode retries throttling and 5xx errors with backoff and rate-limits the client; the pool
# is sized for the concurrent conditional writes.
BOTO_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": MAX_ATTEMPTS}, max_pool_connections=32)
LEDGER_PREFIX = "ledger/"
RUNS_PREFIX = "runs/"
REJECTED_PREFIX = "rejected/"
QUARANTINE_PREFIX = "quarantine/"
DEAD_LETTER_PREFIX = "dead-letter/"
CHECKPOINT_PREFIX = "checkpoints/"


class ObjectGoneError(ChurnGuardError):
    """The object of an event was deleted before it could be read; retrying cannot help."""


@dataclass
class S3Object:
    """An opened object: a streaming body and the identity of the exact version read."""

    key: str
    body: BinaryIO
    etag: str
    version_id: str | None
    size: int


@dataclass(frozen=True)
class Listed:
    """One entry of a listing."""

    key: str
    etag: str
    last_modified: datetime


def ledger_key(key: str, etag: str) -> str:
    """Return the ledger entry of one object content: identical content maps to the same entry."""
    return f"{LEDGER_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:32]}/{etag}.json"


class BehaviourBucket:
    """The bucket where behaviour files land and run records are kept."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @classmethod
    def create(cls, bucket: str) -> BehaviourBucket:
        """Return an adapter with a default client (honours AWS_ENDPOINT_URL)."""
        return cls(boto3.client("s3", config=BOTO_CONFIG), bucket)

    def open(self, key: str, version_id: str | None = None) -> S3Object:
        """Open one object (one exact version when given) for streaming."""
        kwargs = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            resp = self.client.get_object(**kwargs)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "NoSuchVersion", "404"):
                raise ObjectGoneError(f"s3://{self.bucket}/{key} no longer exists") from exc
            raise
        return S3Object(
            key=key,
            body=resp["Body"],
            etag=resp["ETag"].strip('"'),
            version_id=resp.get("VersionId"),
            size=int(resp.get("ContentLength", 0)),
        )

    def list(self, prefix: str) -> Iterator[Listed]:
        """Yield every object under `prefix`."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield Listed(item["Key"], item["ETag"].strip('"'), item["LastModified"])

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Write an object."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, key: str, obj: Any) -> None:
        """Write an object as JSON."""
        self.put_bytes(key, json.dumps(obj, indent=1, default=str).encode(), "application/json")

    def get_json(self, key: str) -> Any:
        """Read a JSON object."""
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def move(self, key: str, version_id: str | None, dest_key: str) -> None:
        """Copy an object version to `dest_key` and delete the original key."""
        source = {"Bucket": self.bucket, "Key": key}
        if version_id:
            source["VersionId"] = version_id
        self.client.copy_object(Bucket=self.bucket, Key=dest_key, CopySource=source)
        self.delete(key)

    # The ledger: one small object per processed object content, so a redelivered event,
    # a Lambda retry or the schedule's sweep finds it and does nothing.
    def find_json(self, key: str) -> Any | None:
        """Read a JSON object, or return None when there is none."""
        data = self.find_bytes(key)
        return None if data is None else json.loads(data)

    def find_bytes(self, key: str) -> bytes | None:
        """Read an object, or return None when there is none."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def delete(self, key: str) -> None:
        """Delete an object."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def ledger_get(self, key: str, etag: str) -> dict[str, Any] | None:
        """Return the ledger record of an object content, or None if never processed."""
        return self.find_json(ledger_key(key, etag))

    def ledger_put(self, key: str, etag: str, record: dict[str, Any]) -> None:
        """Record that an object content was processed."""
        self.put_json(ledger_key(key, etag), record)

    # Checkpoints: where an unfinished run stands, so its next attempt continues instead of starting over.
    def checkpoint_get(self, run_id: str) -> dict[str, Any] | None:
        """Return the checkpoint of an unfinished run, or None."""
        return self.find_json(f"{CHECKPOINT_PREFIX}{run_id}.json")

    def checkpoint_put(self, run_id: str, record: dict[str, Any]) -> None:
        """Record where an unfinished run stands."""
        self.put_json(f"{CHECKPOINT_PREFIX}{run_id}.json", record)

    def checkpoint_delete(self, run_id: str) -> None:
        """Forget the checkpoint of a run that finished (no-op when there is none)."""
        self.delete(f"{CHECKPOINT_PREFIX}{run_id}.json")

    def ledger_keys(self) -> set[str]:
        """Return every ledger entry key (for the sweep)."""
        return {item.key for item in self.list(LEDGER_PREFIX)}
