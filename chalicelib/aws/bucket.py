"""S3 adapter: behaviour files in; rejected rows, quarantine, run records, checkpoints, dead letters,
closed exposures and reports out. It owns the bucket's key layout."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

import boto3

from chalicelib.aws.boto import BOTO_CONFIG, error_code
from chalicelib.runs.ports import CLOSED_READ_BATCH, ClosedFile, Listed, ObjectGoneError, S3Object
from chalicelib.settings import ConfigError

# The bucket's layout: every prefix a run writes under is named here and nowhere else.
# Where versions before the DynamoDB ledger (aws/ledger.py) kept it; nothing reads or writes it now, and the
# bucket's lifecycle expires what is left (docs/operations.md).
LEDGER_PREFIX = "ledger/"
RUNS_PREFIX = "runs/"
REJECTED_PREFIX = "rejected/"
QUARANTINE_PREFIX = "quarantine/"
DEAD_LETTER_PREFIX = "dead-letter/"
CHECKPOINT_PREFIX = "checkpoints/"
ATTEMPTS_PREFIX = "attempts/"
CLOSED_PREFIX = "outcomes/closed/"
# Closed exposures known to be final (no risk item holds them any more), one object per day of exposure
# (runs/closed_archive.py): the lift report reads one object a day instead of one a chunk that ever closed one.
ARCHIVE_PREFIX = "outcomes/archive/"
# Files of closed exposures read (or deleted) at once, CLOSED_READ_BATCH a batch: well within BOTO_CONFIG's 32
# connections.
CLOSED_READ_CONCURRENCY = 16
# What S3 answers a conditional write that lost a race: a changed object, or one being written at the same time.
LOST_RACE_CODES = ("PreconditionFailed", "ConditionalRequestConflict")
# A backfill's working objects (plan, item lists, range parts, shard parts, summaries), one folder per run:
# the finish step deletes them, and a lifecycle rule on the prefix expires what a failed run left.
BACKFILL_PREFIX = "backfill/"
LIFT_REPORT_KEY = "reports/lift.json"
# Each scheduled run's report: reports/<run_id>.html and .json (its content), and the latest of both.
REPORTS_PREFIX = "reports/"
LATEST_REPORT = "latest"
# File runs' records (runs/file_run.py names their runs obj-<hash>).
FILE_RUNS_PREFIX = f"{RUNS_PREFIX}obj-"
# When the latest re-score of every user began (see runs/chunk.py): beside the run records, named as no run is.
RESCORE_MARK_KEY = f"{RUNS_PREFIX}_rescored-through.json"
SCHEDULE_WRITES_KEY = f"{RUNS_PREFIX}_schedule-writes.json"
# Where the archiving of closed exposures (runs/closed_archive.py) goes on from, so files kept back do not stop it.
ARCHIVE_CURSOR_KEY = f"{RUNS_PREFIX}_closed-archive-cursor.json"
# The lift report's outcome counts of each settled day of the archive, so a report reads only the days still open.
ARCHIVE_COUNTS_KEY = f"{RUNS_PREFIX}_closed-archive-counts.json"
# The item lists the state machines' Distributed Maps read (ItemReader), one folder per run.
MAP_ITEMS_PREFIX = "map-items/"
REASON_SUFFIX = ".reason.json"
SOURCE_SUFFIX = ".source.json"
# S3 refuses a key over 1,024 bytes of UTF-8. A copy of a landed key under another prefix that would pass it
# gets a hashed name instead: as much of the key as fits, then the SHA-256 of the whole key.
MAX_KEY_BYTES = 1024
HASH_MARK = "~sha256-"
T = TypeVar("T")
R = TypeVar("R")


def derived_key(prefix: str, key: str, suffix: str = "") -> str:
    """Return prefix + key + suffix, or its hashed form when that would pass S3's 1,024-byte key limit.

    The hashed form keeps the key's head (cut at a character boundary) and the SHA-256 of the whole key, so it
    is the same on every attempt and two keys never share it.
    """
    whole = f"{prefix}{key}{suffix}"
    if len(whole.encode()) <= MAX_KEY_BYTES:
        return whole
    tail = f"{HASH_MARK}{hashlib.sha256(key.encode()).hexdigest()}{suffix}"
    room = MAX_KEY_BYTES - len(f"{prefix}{tail}".encode())
    head = key.encode()[:room].decode(errors="ignore")
    return f"{prefix}{head}{tail}"


# Full-object checksums S3 may return with ChecksumMode=ENABLED, strongest first; a multipart upload's
# COMPOSITE checksum (a checksum of part checksums, shown with a -N suffix) depends on its part sizes.
_CHECKSUMS = ("ChecksumSHA256", "ChecksumSHA1", "ChecksumCRC64NVME", "ChecksumCRC32C", "ChecksumCRC32")


def content_identity(resp: dict[str, Any]) -> str:
    """Return what names an object's content, the same for a byte-identical upload however it was made.

    A single-part upload's ETag is the MD5 of its bytes (SSE-S3 or none; not under SSE-KMS): it is the identity,
    as it always was. Otherwise (a multipart upload, whose ETag depends on its part sizes, or SSE-KMS) the
    full-object checksum S3 keeps, with the size: "<algorithm>-<hex>-<bytes>". Without one, the ETag again.
    """
    etag = resp["ETag"].strip('"')
    if "-" not in etag and not str(resp.get("ServerSideEncryption", "")).startswith("aws:kms"):
        return etag
    if resp.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT":
        return etag
    for name in _CHECKSUMS:
        value = resp.get(name)
        if not value or "-" in value:
            continue
        try:
            digest = base64.b64decode(value, validate=True).hex()
        except binascii.Error:
            continue
        return f"{name.removeprefix('Checksum').lower()}-{digest}-{int(resp.get('ContentLength', 0))}"
    return etag


class BehaviourBucket:
    """The bucket where behaviour files land and run records are kept."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self._versioned = False  # checked once per container, on the first read
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def create(cls, bucket: str) -> BehaviourBucket:
        """Return an adapter with a default client (honours AWS_ENDPOINT_URL)."""
        return cls(boto3.client("s3", config=BOTO_CONFIG), bucket)

    def require_versioning(self) -> None:
        """Raise ConfigError unless the bucket keeps versions; the first success is remembered by this adapter.

        Without versioning, an object overwritten between its event and the read loses its first content, and
        nothing would say so.
        """
        if self._versioned:
            return
        try:
            status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        except self.client.exceptions.ClientError as exc:
            raise ConfigError(
                f"cannot check that bucket {self.bucket} keeps versions ({error_code(exc)}): "
                "the functions need s3:GetBucketVersioning on it"
            ) from exc
        if status != "Enabled":
            raise ConfigError(
                f"bucket {self.bucket} does not keep versions (versioning {status or 'never enabled'}): a file "
                "overwritten between its event and the read would lose its first content; enable versioning "
                "(chalicelib.bootstrap.ensure_resources and infra/ do)"
            )
        self._versioned = True

    def open(self, key: str, version_id: str | None = None) -> S3Object:
        """Open one object (one exact version when given) for streaming; refuse a bucket without versioning."""
        self.require_versioning()
        kwargs = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            resp = self.client.get_object(**kwargs)
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "NoSuchVersion", "404"):
                raise ObjectGoneError(f"s3://{self.bucket}/{key} no longer exists") from exc
            raise
        return S3Object(
            key=key,
            body=resp["Body"],
            etag=resp["ETag"].strip('"'),
            version_id=resp.get("VersionId"),
            size=int(resp.get("ContentLength", 0)),
            identity=content_identity(resp),
        )

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[Listed]:
        """Yield every object under `prefix`, in key order (from after `start_after` when given)."""
        paginator = self.client.get_paginator("list_objects_v2")
        start = {"StartAfter": start_after} if start_after else {}
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, **start):
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

    def find_json(self, key: str) -> Any | None:
        """Read a JSON object, or return None when there is none."""
        data = self.find_bytes(key)
        return None if data is None else json.loads(data)

    def find_json_tagged(self, key: str) -> tuple[Any, str] | None:
        """Read a JSON object and its ETag (for a conditional write or delete over it), or None when there is none."""
        found = self._find_tagged(key)
        return None if found is None else (json.loads(found[0]), found[1])

    def _find_tagged(self, key: str) -> tuple[bytes, str] | None:
        """Read an object's bytes and its ETag, or None when there is none."""
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            return None
        return resp["Body"].read(), resp["ETag"]

    def find_bytes(self, key: str) -> bytes | None:
        """Read an object, or return None when there is none."""
        found = self._find_tagged(key)
        return None if found is None else found[0]

    def delete(self, key: str) -> None:
        """Delete an object."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

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

    # Attempt counts: how often an unfinished file run started, so a file failing every attempt is set aside.
    def attempts_get(self, run_id: str) -> dict[str, Any] | None:
        """Return the attempt count of an unfinished file run, or None when none is counted."""
        return self.find_json(f"{ATTEMPTS_PREFIX}{run_id}.json")

    def attempts_put(self, run_id: str, record: dict[str, Any]) -> None:
        """Record how often a file run was attempted and how its last attempt failed."""
        self.put_json(f"{ATTEMPTS_PREFIX}{run_id}.json", record)

    def attempts_delete(self, run_id: str) -> None:
        """Forget the attempt count of a file run that finished (no-op when there is none)."""
        self.delete(f"{ATTEMPTS_PREFIX}{run_id}.json")

    def listing(self, prefix: str, after: str | None, max_keys: int) -> tuple[list[Listed], str | None]:
        """Return up to `max_keys` objects under `prefix` after key `after` (1,000 a call), and the key to resume
        after (None: the listing reached the end of the prefix); refuse a bucket without versioning."""
        self.require_versioning()
        found: list[Listed] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if after:
            kwargs["StartAfter"] = after
        while len(found) < max_keys:
            resp = self.client.list_objects_v2(**kwargs, MaxKeys=min(1000, max_keys - len(found)))
            found += [Listed(i["Key"], i["ETag"].strip('"'), i["LastModified"]) for i in resp.get("Contents", [])]
            if not resp.get("IsTruncated"):
                return found, None
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]
        return found, (found[-1].key if found else after)

    def url(self, key: str) -> str:
        """Return the s3:// address of a key."""
        return f"s3://{self.bucket}/{key}"

    def quarantine(self, key: str, version_id: str | None, reason: dict[str, Any]) -> str:
        """Move an unreadable file to quarantine/ with its reason (and its key) beside it; return the new key."""
        dest = derived_key(QUARANTINE_PREFIX, key, REASON_SUFFIX).removesuffix(REASON_SUFFIX)
        self.move(key, version_id, dest)
        self.put_json(dest + REASON_SUFFIX, {**reason, "key": key})
        return dest

    def put_rejected(self, key: str, data: bytes) -> str:
        """Write a file's rejected rows to rejected/<key>.csv; return their address.

        Under a hashed name (a key too long to copy whole) the original key is kept beside it in .source.json.
        """
        rejected_key = f"{REJECTED_PREFIX}{key}.csv"
        hashed = len(rejected_key.encode()) > MAX_KEY_BYTES
        if hashed:
            base = derived_key(REJECTED_PREFIX, key, SOURCE_SUFFIX).removesuffix(SOURCE_SUFFIX)
            rejected_key = f"{base}.csv"
        self.put_bytes(rejected_key, data, "text/csv")
        if hashed:
            self.put_json(base + SOURCE_SUFFIX, {"key": key, "source": self.url(key)})
        return self.url(rejected_key)

    def opt_out_list(self, key: str) -> bytes | None:
        """Return the opt-out list's bytes, or None when there is none."""
        return self.find_bytes(key)

    def run_record_get(self, run_id: str) -> dict[str, Any] | None:
        """Return the record of a run from runs/, or None."""
        return self.find_json(f"{RUNS_PREFIX}{run_id}.json")

    def run_record_put(self, run_id: str, record: dict[str, Any]) -> None:
        """Write the record of a run to runs/."""
        self.put_json(f"{RUNS_PREFIX}{run_id}.json", record)

    def dead_letters_get(self, run_id: str) -> dict[str, Any] | None:
        """Return what a run left to replay, from dead-letter/, or None."""
        return self.find_json(f"{DEAD_LETTER_PREFIX}{run_id}.json")

    def dead_letters_put(self, run_id: str, record: dict[str, Any]) -> str:
        """Keep what a run left to replay in dead-letter/; return its address."""
        self.put_json(f"{DEAD_LETTER_PREFIX}{run_id}.json", record)
        return self.dead_letters_url(run_id)

    def dead_letters_url(self, run_id: str) -> str:
        """Return the address of a run's dead-letter record."""
        return self.url(f"{DEAD_LETTER_PREFIX}{run_id}.json")

    def dead_letters_delete(self, run_id: str) -> None:
        """Forget the dead letters of a replayed run."""
        self.delete(f"{DEAD_LETTER_PREFIX}{run_id}.json")

    def closed_put(self, run_id: str, exposures: list[dict[str, Any]]) -> None:
        """Keep exposures a run is about to replace in outcomes/closed/<run>/, named by which exposures they are.

        The same exposures (a redo after a crash) land on the same key, so a redo adds nothing.
        """
        names = sorted(f"{e['user_id']}\x1f{e['exposed_at']}" for e in exposures)
        digest = hashlib.sha256("\x1e".join(names).encode()).hexdigest()[:32]
        self.put_json(f"{CLOSED_PREFIX}{run_id}/{digest}.json", exposures)

    def closed_all(self) -> Iterator[dict[str, Any]]:
        """Yield every exposure any run replaced and the archive does not hold yet."""
        listed = self.closed_listed()
        while keys := [item.key for item in islice(listed, CLOSED_READ_BATCH)]:
            for found in self.closed_read_many(keys):
                if found is not None:  # archived before it was deleted: the archive, read after, holds them
                    yield from found.exposures

    def closed_read_many(self, keys: list[str]) -> list[ClosedFile | None]:
        """Return `closed_read` of each key, CLOSED_READ_CONCURRENCY at a time (a GET is mostly waiting)."""
        return self._in_parallel(self.closed_read, keys)

    def closed_delete_many(self, files: list[ClosedFile]) -> list[bool]:
        """Return `closed_delete` of each file, CLOSED_READ_CONCURRENCY at a time."""
        return self._in_parallel(self.closed_delete, files)

    def _in_parallel(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        if len(items) < 2:
            return [fn(i) for i in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(CLOSED_READ_CONCURRENCY, thread_name_prefix="s3-closed")
        return list(self._pool.map(fn, items))

    def closed_listed(self, start_after: str | None = None) -> Iterator[Listed]:
        """Yield the files of closed exposures in key order, from after `start_after` when given."""
        return self.list(CLOSED_PREFIX, start_after)

    def closed_read(self, key: str) -> ClosedFile | None:
        """Return a file of closed exposures and the version read, or None when it is gone (archived meanwhile)."""
        found = self.find_json_tagged(key)
        return None if found is None else ClosedFile(key, found[1], found[0])

    def closed_delete(self, file: ClosedFile) -> bool:
        """Delete a file of closed exposures if it is still the version read (S3's If-Match); False when a redo has
        written it again since, and it stays."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=file.key, IfMatch=file.version)
        except self.client.exceptions.ClientError as exc:
            code = error_code(exc)
            if code in LOST_RACE_CODES:
                return False
            if code not in ("NoSuchKey", "404"):  # gone already: another archiver deleted it
                raise
        return True

    def archive_cursor_get(self) -> str | None:
        """Return the file of closed exposures the last archiving stopped at, or None to start at the first."""
        mark = self.find_json(ARCHIVE_CURSOR_KEY)
        return None if mark is None else mark.get("after")

    def archive_cursor_put(self, after: str | None) -> None:
        """Record where the next archiving starts (None: at the first file)."""
        self.put_json(ARCHIVE_CURSOR_KEY, {"after": after})

    def makes_conditional_writes(self) -> bool:
        """Return whether this botocore sends S3's If-Match and If-None-Match (the Lambda runtime's may be older)."""
        model = self.client.meta.service_model
        put = set(model.operation_model("PutObject").input_shape.members)
        delete = set(model.operation_model("DeleteObject").input_shape.members)
        return {"IfMatch", "IfNoneMatch"} <= put and "IfMatch" in delete

    def archive_versions(self) -> dict[str, str]:
        """Return each day the archive holds and its object's ETag, as a GET gives it, from one listing."""
        return {
            item.key[len(ARCHIVE_PREFIX) : -len(".json")]: f'"{item.etag}"'
            for item in self.list(ARCHIVE_PREFIX)
            if item.key.endswith(".json")
        }

    def archive_get(self, day: str) -> tuple[list[dict[str, Any]], str | None]:
        """Return the archived exposures of one day and the object's ETag, or ([], None) when there are none."""
        return self.find_json_tagged(f"{ARCHIVE_PREFIX}{day}.json") or ([], None)

    def archive_put(self, day: str, exposures: list[dict[str, Any]], etag: str | None) -> bool:
        """Write one day's archive over the version read (`etag`; None: over none); False when another write came
        first, and nothing was written."""
        return self._put_over(f"{ARCHIVE_PREFIX}{day}.json", json.dumps(exposures, separators=(",", ":")), etag)

    def archive_counts_get(self) -> tuple[Any, str | None]:
        """Return the saved outcome counts of the archive's settled days and their ETag; (None, None) when there
        are none, (None, ETag) when the object is not JSON (it is then written over)."""
        found = self._find_tagged(ARCHIVE_COUNTS_KEY)
        if found is None:
            return None, None
        try:
            return json.loads(found[0]), found[1]
        except ValueError:
            return None, found[1]

    def archive_counts_put(self, counts: dict[str, Any], etag: str | None) -> bool:
        """Write the outcome counts of the settled days over the version read (None: over none); False when
        another write came first, and nothing was written."""
        return self._put_over(ARCHIVE_COUNTS_KEY, json.dumps(counts, separators=(",", ":")), etag)

    def _put_over(self, key: str, body: str, etag: str | None) -> bool:
        """Write a JSON object only over the version read (If-Match; If-None-Match when `etag` is None); False
        when another write came first."""
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=body.encode(), ContentType="application/json", **condition
            )
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) in LOST_RACE_CODES:
                return False
            raise
        return True

    def lift_report_put(self, report: dict[str, Any]) -> str:
        """Write the latest lift report to reports/lift.json; return its address."""
        self.put_json(LIFT_REPORT_KEY, report)
        return self.url(LIFT_REPORT_KEY)

    def run_report_put(self, run_id: str, content: dict[str, Any], html: str) -> str:
        """Write reports/<run_id>.json and .html, then the same as reports/latest.*; return the run's page address."""
        page = html.encode()
        for name in (run_id, LATEST_REPORT):
            self.put_json(f"{REPORTS_PREFIX}{name}.json", content)
            self.put_bytes(f"{REPORTS_PREFIX}{name}.html", page, "text/html; charset=utf-8")
        return self.url(f"{REPORTS_PREFIX}{run_id}.html")

    def run_report_latest(self) -> dict[str, Any] | None:
        """Return the content of reports/latest.json, or None before the first report."""
        return self.find_json(f"{REPORTS_PREFIX}{LATEST_REPORT}.json")

    def file_run_records(self, since: float | None, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Return up to `limit` file-run records last written at or after `since`, and how many more there were."""
        after = None if since is None else datetime.fromtimestamp(since, tz=UTC)
        keys = [item.key for item in self.list(FILE_RUNS_PREFIX) if after is None or item.last_modified >= after]
        found = [self.find_json(key) for key in keys[:limit]]
        return [record for record in found if record is not None], max(0, len(keys) - limit)

    def read_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        """Return bytes [start, end) of one object version (a backfill's range)."""
        if end <= start:
            return b""
        kwargs = {"Bucket": self.bucket, "Key": key, "Range": f"bytes={start}-{end - 1}"}
        if version_id:
            kwargs["VersionId"] = version_id
        return self.client.get_object(**kwargs)["Body"].read()

    def backfill_put(self, run_id: str, name: str, data: bytes) -> str:
        """Write one of a backfill's working objects under backfill/<run_id>/; return its key."""
        key = f"{BACKFILL_PREFIX}{run_id}/{name}"
        self.put_bytes(key, data, "application/octet-stream")
        return key

    def backfill_get(self, run_id: str, name: str) -> bytes | None:
        """Return one of a backfill's working objects, or None when there is none (needs s3:ListBucket there)."""
        return self.find_bytes(f"{BACKFILL_PREFIX}{run_id}/{name}")

    def backfill_delete(self, run_id: str, names: list[str]) -> None:
        """Delete a backfill's working objects, a thousand per call."""
        keys = [{"Key": f"{BACKFILL_PREFIX}{run_id}/{name}"} for name in names]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )

    def rescored_through(self) -> float | None:
        """Return the time of the latest re-score of every user that has begun, or None before the first."""
        mark = self.find_json(RESCORE_MARK_KEY)
        return None if mark is None else float(mark["rescored_through"])

    def mark_rescored(self, at: float) -> None:
        """Move the re-score mark on to `at`, unless it is there or later already (a redo of an older schedule)."""
        current = self.rescored_through()
        if current is None or current < at:
            as_of = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.put_json(RESCORE_MARK_KEY, {"rescored_through": at, "as_of": as_of})

    def schedule_writes_get(self) -> dict[str, Any] | None:
        """Return what the latest finished schedule wrote per user, from runs/_schedule-writes.json, or None."""
        return self.find_json(SCHEDULE_WRITES_KEY)

    def schedule_writes_put(self, measured: dict[str, Any]) -> None:
        """Keep what a finished schedule wrote per user in runs/_schedule-writes.json (the latest one wins)."""
        self.put_json(SCHEDULE_WRITES_KEY, measured)

    def segments_put(self, run_id: str, segments: list[dict[str, Any]]) -> str:
        """Write the segment list of a schedule run to map-items/<run>/segments.json; return its key."""
        key = f"{MAP_ITEMS_PREFIX}{run_id}/segments.json"
        self.put_bytes(key, json.dumps(segments).encode(), "application/json")
        return key
