"""The small interfaces a run talks to: the bucket, the tables and the queues, and the data they exchange.

One adapter per AWS service implements each (chalicelib/aws); tests hand in in-memory fakes. The adapter that
owns a store owns its layout: S3 keys, DynamoDB attribute names and conditions, SQS batching.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, NamedTuple, Protocol

from chalicelib.errors import ChurnGuardError
from chalicelib.retention.contact_policy import PENDING as PENDING  # claim statuses, re-exported for adapters
from chalicelib.retention.contact_policy import SENT as SENT
from chalicelib.runs.applied_runs import AppliedRuns
from chalicelib.scoring.state import StateBatch

# What became of one conditional write.
WRITTEN, CONFLICT, FAILED = "written", "conflict", "failed"


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
    # What names the content (the adapter decides: the ETag, or a full-object checksum where the ETag is no
    # content hash); empty: the ETag.
    identity: str = ""

    def __post_init__(self) -> None:
        self.identity = self.identity or self.etag


@dataclass(frozen=True)
class Listed:
    """One entry of a listing."""

    key: str
    etag: str
    last_modified: datetime


# Files of closed exposures read at once (the bucket reads a batch in parallel), and between looks at the time left.
CLOSED_READ_BATCH = 256


@dataclass(frozen=True)
class ClosedFile:
    """One file of closed exposures, as read: its key, the version read (its ETag) and its exposures."""

    key: str
    version: str
    exposures: list[dict[str, Any]]


@dataclass
class StoredStates:
    """Stored state of some users, with each one's version and recently merged runs."""

    batch: StateBatch
    versions: dict[str, int] = field(default_factory=dict)
    applied: dict[str, AppliedRuns] = field(default_factory=dict)
    locales: dict[str, tuple[float, str]] = field(default_factory=dict)
    expired: int = 0  # users left out because their expiry had passed (TTL deletes within days, not at once)
    # Users whose item could not be read at all (BatchGetItem left their keys unprocessed through every retry):
    # not the same as users never seen, so their work is dead-lettered for replay, never done blind.
    unread: list[str] = field(default_factory=list)


class StoredRisks(dict[str, dict[str, Any]]):
    """Stored risk items by user (users without one left out), and the users whose item could not be read."""

    def __init__(self, items: Any = (), unread: list[str] | None = None) -> None:
        super().__init__(items)
        self.unread: list[str] = list(unread or [])


@dataclass(frozen=True)
class StateWrite:
    """One user's new state, to be written only if the stored version is still `expected`."""

    user_id: str
    blob: bytes
    first_seen: str
    last_seen: str
    last_event: float  # epoch seconds of the user's latest event: the expiry counts from it
    events: int
    run_id: str
    expected: int  # 0: the user has no stored state yet
    applied: AppliedRuns
    locale: tuple[float, str] | None = None  # (time, locale) of the user's latest row naming one

    @property
    def version(self) -> int:
        """Return the version the item has once this write lands."""
        return self.expected + 1


@dataclass(frozen=True)
class RiskWrite:
    """One user's whole risk item, to be written only if the stored item is still at version `expected`."""

    item: dict[str, Any]
    expected: int  # 0: the user has no risk item yet
    last_event: float  # epoch seconds of the latest event in the state scored: the expiry counts from it

    @property
    def user_id(self) -> str:
        """Return the user the item belongs to."""
        return self.item["user_id"]


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a run's lease, and until when (epoch seconds); holder "" when nobody does."""

    holder: str
    until: float


@dataclass(frozen=True)
class TableStats:
    """What DynamoDB says of a table's size: its item count (updated about every six hours) and warm throughput."""

    items: int
    write_units_per_second: int | None = None  # the table's warm write throughput; None when DynamoDB names none


class CapStore(Protocol):
    """One message counter per run, shared by all its workers, and the grants each chunk of work took from it.

    Kept in the state table under keys no user id can be; each grant is written in the same transaction as the
    counter's increment, so a chunk redone after a crash finds the grants it took and never takes another.
    """

    def grant(self, run_id: str, chunk: str, user_id: str, cap: int) -> bool | None:
        """Take one message of the run's `cap` for a user of `chunk`; return True (taken, or taken before by this
        chunk), None when the cap is reached."""

    def granted(self, run_id: str, chunk: str) -> frozenset[str]:
        """Return the users `chunk` of the run holds a grant for."""

    def claimed(self, run_id: str) -> int:
        """Return how many messages of the run's cap are taken."""


class LeaseStore(Protocol):
    """One lease per run id, each written under its own condition: one attempt at a time per run."""

    def take(self, run_id: str, holder: str, until: float, now: float) -> LeaseHolder | None:
        """Hold the run's lease until `until` unless another holder's is live at `now`; return that one, or None."""

    def renew(self, run_id: str, holder: str, until: float) -> LeaseHolder | None:
        """Move `holder`'s lease on to `until`; return who holds it instead, or None when it was renewed."""

    def release(self, run_id: str, holder: str) -> None:
        """Give up `holder`'s lease (nothing happens when another attempt holds it now)."""


class Bucket(Protocol):
    """Where behaviour files land and where a run keeps its records (ledger, checkpoints, dead letters...)."""

    bucket: str

    def url(self, key: str) -> str:
        """Return the s3:// address of a key."""

    def open(self, key: str, version_id: str | None = None) -> S3Object:
        """Open one object (one exact version when given); raise ObjectGoneError when it is gone."""

    def listing(self, prefix: str, after: str | None, max_keys: int) -> tuple[list[Listed], str | None]:
        """Return up to `max_keys` objects under `prefix` after key `after`, and the key to resume after (None: the
        listing reached the end)."""

    def quarantine(self, key: str, version_id: str | None, reason: dict[str, Any]) -> str:
        """Move an unreadable file aside with its reason beside it; return where it went."""

    def put_rejected(self, key: str, data: bytes) -> str:
        """Keep the rejected rows of a file (CSV); return their address."""

    def opt_out_list(self, key: str) -> bytes | None:
        """Return the opt-out list's bytes, or None when there is none."""

    def run_record_get(self, run_id: str) -> dict[str, Any] | None:
        """Return the record of a finished run, or None."""

    def run_record_put(self, run_id: str, record: dict[str, Any]) -> None:
        """Write the record of a run."""

    def checkpoint_get(self, run_id: str) -> dict[str, Any] | None:
        """Return the checkpoint of an unfinished run, or None."""

    def checkpoint_put(self, run_id: str, record: dict[str, Any]) -> None:
        """Record where an unfinished run stands."""

    def checkpoint_delete(self, run_id: str) -> None:
        """Forget the checkpoint of a run that finished."""

    def attempts_get(self, run_id: str) -> dict[str, Any] | None:
        """Return the attempt count of an unfinished file run, or None when none is counted."""

    def attempts_put(self, run_id: str, record: dict[str, Any]) -> None:
        """Record how often a file run was attempted and how its last attempt failed."""

    def attempts_delete(self, run_id: str) -> None:
        """Forget the attempt count of a file run that finished."""

    def dead_letters_get(self, run_id: str) -> dict[str, Any] | None:
        """Return what a run left to replay, or None."""

    def dead_letters_put(self, run_id: str, record: dict[str, Any]) -> str:
        """Keep what a run left to replay; return its address."""

    def dead_letters_url(self, run_id: str) -> str:
        """Return the address of a run's dead-letter record."""

    def dead_letters_delete(self, run_id: str) -> None:
        """Forget the dead letters of a run that was replayed."""

    def closed_put(self, run_id: str, exposures: list[dict[str, Any]]) -> None:
        """Keep exposures a run is about to replace, for the lift report; the same exposures land in the same place."""

    def closed_all(self) -> Iterator[dict[str, Any]]:
        """Yield every exposure any run replaced and the archive does not hold yet."""

    def closed_listed(self, start_after: str | None = None) -> Iterator[Listed]:
        """Yield the files of closed exposures in key order, from after `start_after` when given."""

    def closed_read_many(self, keys: list[str]) -> list[ClosedFile | None]:
        """Return each file of closed exposures and the version read, None for one gone (several read at once)."""

    def closed_delete_many(self, files: list[ClosedFile]) -> list[bool]:
        """Delete each file of closed exposures that is still the version read; False for one written again since."""

    def archive_cursor_get(self) -> str | None:
        """Return the file of closed exposures the last archiving stopped at, or None to start at the first."""

    def archive_cursor_put(self, after: str | None) -> None:
        """Record where the next archiving starts (None: at the first file)."""

    def makes_conditional_writes(self) -> bool:
        """Return whether conditional writes (If-Match, If-None-Match) can be made."""

    def archive_get(self, day: str) -> tuple[list[dict[str, Any]], str | None]:
        """Return the archived exposures of one day and their version, or ([], None) when there are none."""

    def archive_put(self, day: str, exposures: list[dict[str, Any]], etag: str | None) -> bool:
        """Write one day's archive over the version read (None: over none); False when another write came first."""

    def archive_versions(self) -> dict[str, str]:
        """Return each day the archive holds and the version of its object, as archive_get returns it."""

    def archive_counts_get(self) -> tuple[Any, str | None]:
        """Return the saved outcome counts of the archive's settled days and their version; (None, None) when
        there are none, (None, version) when they do not parse."""

    def archive_counts_put(self, counts: dict[str, Any], etag: str | None) -> bool:
        """Write the counts over the version read (None: over none); False when another write came first."""

    def lift_report_put(self, report: dict[str, Any]) -> str:
        """Write the latest lift report; return its address."""

    def run_report_put(self, run_id: str, content: dict[str, Any], html: str) -> str:
        """Write a run's report (content as JSON, HTML page), also as the latest; return the page's address."""

    def run_report_latest(self) -> dict[str, Any] | None:
        """Return the content of the latest run report, or None before the first."""

    def file_run_records(self, since: float | None, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Return up to `limit` file runs' records written since epoch time `since` (all: None), and how many more."""

    def read_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        """Return bytes [start, end) of one object version (a backfill's range)."""

    def backfill_put(self, run_id: str, name: str, data: bytes) -> str:
        """Keep one of a backfill's working objects (plan, item lists, parts, summaries); return its key."""

    def backfill_get(self, run_id: str, name: str) -> bytes | None:
        """Return one of a backfill's working objects, or None when it was never written."""

    def backfill_delete(self, run_id: str, names: list[str]) -> None:
        """Delete a finished backfill's working objects."""

    def rescored_through(self) -> float | None:
        """Return the time of the latest re-score of every user that has begun, or None before the first."""

    def mark_rescored(self, at: float) -> None:
        """Record that a re-score of every user as of `at` has begun; the mark never moves back."""

    def schedule_writes_get(self) -> dict[str, Any] | None:
        """Return what the latest finished schedule wrote per user (schedule_run.measured_writes), or None."""

    def schedule_writes_put(self, measured: dict[str, Any]) -> None:
        """Keep what a finished schedule wrote per user, for the next plan to size its segments by."""

    def segments_put(self, run_id: str, segments: list[dict[str, Any]]) -> str:
        """Write the segment list of a schedule run as a JSON array (the map's item list); return its key."""


class LedgerStore(Protocol):
    """One record per processed object content, written once and forgotten after the ledger's retention."""

    def find(self, key: str, content: str) -> dict[str, Any] | None:
        """Return the ledger record of an object content, or None if never processed."""

    def put(self, key: str, content: str, record: dict[str, Any]) -> None:
        """Record that an object content was processed, unless it is recorded already (the first record stands)."""

    def cursor(self) -> str | None:
        """Return the key the schedule's reconciliation listing resumes after, or None to start from the first."""

    def set_cursor(self, after: str | None) -> None:
        """Keep where the reconciliation listing stopped (None: it reached the end)."""


class Tables(Protocol):
    """Per-user behaviour state and current risk, each written under its own condition."""

    retries: Counter[str]
    leases: LeaseStore  # kept in the state table, under keys no user id can be
    caps: CapStore  # the shared message counters of runs spread over many workers, in the state table too
    ledger: LedgerStore  # likewise

    def expiry(self, last_event: float) -> int:
        """Return the epoch second after which a user last seen at `last_event` is forgotten."""

    def get_states(self, user_ids: list[str]) -> StoredStates:
        """Return the stored state of the given users (users never seen are left out; unreadable ones named)."""

    def scan_states(
        self,
        start_key: dict[str, Any] | None,
        page_items: int,
        *,
        as_of: float,
        segment: int | None = None,
        total_segments: int | None = None,
    ) -> Iterator[tuple[StoredStates, dict[str, Any] | None]]:
        """Yield each page of live states (of one parallel-scan segment when given) and the key resuming after it."""

    def state_table_stats(self) -> TableStats:
        """Return the state table's item count and warm write throughput, as DescribeTable gives them."""

    def get_risks(self, user_ids: list[str]) -> StoredRisks:
        """Return the stored risk items of the given users, naming those whose item could not be read."""

    def scan_exposures(self, segment: int | None = None, total_segments: int | None = None) -> list[dict[str, Any]]:
        """Return the exposure attributes of every risk item that has one (of one parallel-scan segment when given)."""

    def put_states(self, writes: list[StateWrite]) -> dict[str, str]:
        """Write each state if its version is unchanged; return user -> WRITTEN | CONFLICT | FAILED."""

    def put_risks(self, writes: list[RiskWrite]) -> dict[str, str]:
        """Write each risk item if its version is unchanged; return user -> WRITTEN | CONFLICT | FAILED."""

    def confirm_sent(self, claims: list[tuple[str, str]]) -> int:
        """Mark (user, message id) claims as sent; return how many were still this message's claim."""


@dataclass(frozen=True)
class Missed:
    """A message about a file whose delivery failed, received from one of the queues the sweep drains."""

    queue: str
    receipt: str
    body: str


class MissedFiles(Protocol):
    """The queues of failed deliveries: the files queue's dead-letter queue, failed asynchronous invocations."""

    def receive(self, limit: int, hide_seconds: int) -> list[Missed]:
        """Return up to `limit` messages, each hidden from other readers for `hide_seconds` (none: nothing waits)."""

    def delete(self, message: Missed) -> None:
        """Delete a message whose files all reached a final status."""


class Started(NamedTuple):
    """An execution of a state machine: its ARN, and whether this call started it (False: it ran already)."""

    execution_arn: str
    new: bool


class Workflows(Protocol):
    """The state machines that spread one run over many functions (Step Functions Distributed Map).

    An execution is named after its run id, and Step Functions keeps a Standard workflow's execution names for 90
    days: a second start under the same name starts nothing, so a duplicate event is harmless.
    """

    def available(self, machine: str) -> bool:
        """Return True when the state machine (BACKFILL or SCHEDULE) is deployed for this stage."""

    def start(self, machine: str, name: str, payload: dict[str, Any]) -> Started:
        """Start an execution of `machine` named `name` with `payload` as its input, unless one of that name exists."""


# The state machines, by the name a run asks for.
BACKFILL, SCHEDULE = "backfill", "schedule"


class Sent(NamedTuple):
    """What became of the messages of one send."""

    accepted: int
    failed: list[dict[str, Any]]  # still failing after the retries: a replay may send them
    refused: list[tuple[dict[str, Any], str]]  # refused for what they hold (body, why): the same body never goes


class Queues(Protocol):
    """Retention messages to one queue per destination (the actionable risk tiers, account managers)."""

    queue_names: dict[str, str]
    retries: Counter[str]
    batch_size: int  # messages per send call: the unit a run marks sent at once

    def send(self, tier: str, messages: list[dict[str, Any]]) -> Sent:
        """Send messages to a destination's queue; return how many were accepted, failed and refused."""
