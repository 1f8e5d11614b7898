"""Settings read once from the environment and validated at the edge.

`Settings` is the one table of settings: each field says, through `setting(...)`, which environment variable it is
read from, how the text is parsed, its default, its lower bound, and whether it is required. `Settings.from_env`
reads every field in one loop; `VARIABLES` and `DEFAULTS` expose the table to other modules and to tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from chalicelib.errors import ChurnGuardError
from chalicelib.ingest.budget import DEFAULT_FUNCTION_MEMORY_MB, file_memory_budget_mb, inflation_limit
from chalicelib.retry import BASE_DELAY, MAX_DELAY

DEFAULT_INCOMING_PREFIX = "incoming/"
DEFAULT_SCHEDULE = "rate(1 day)"
# The queue S3 notifications go to on a stage that delivers landed files through SQS (on_behaviour_queue).
DEFAULT_FILES_QUEUE = "churnguard-files-dev"
# Suffixes of the files queue's dead-letter queue and of the failed asynchronous invocations' queue.
FILES_DEAD_LETTER_SUFFIX = "-dlq"
FILES_FAILED_SUFFIX = "-failed"
DEFAULT_RETENTION_DAYS = 730
# Retention may not be shorter than this: it must outlast, with room to spare, every window the code waits
# out or measures after a user's last event (the model's outcome horizon, the playbook's cooldowns).
RETENTION_FLOOR_DAYS = 90
SECONDS_PER_DAY = 86400
# Stands for "no default" in a Variable (dataclasses' own MISSING would make the Variable field itself required).
_NO_DEFAULT: Any = object()


class ConfigError(ChurnGuardError):
    """A missing or malformed setting."""


def _text(variable: str, text: str) -> str:
    """Return the text as it is."""
    return text


def _prefix(variable: str, text: str) -> str:
    """Return a key prefix ending in '/', so that it names a folder and never part of a name."""
    return text if text.endswith("/") else f"{text}/"


def _number(variable: str, text: str) -> float:
    """Return the text as a finite number; raise ConfigError naming the variable otherwise."""
    try:
        value = float(text)
    except ValueError as exc:
        raise ConfigError(f"{variable} must be a number, not {text!r}") from exc
    if not math.isfinite(value):  # float() takes "nan" and "inf", and nan passes any minimum
        raise ConfigError(f"{variable} must be a finite number, not {text!r}")
    return value


def _whole(variable: str, text: str) -> int:
    """Return the text as a whole number (no fraction, no exponent); raise ConfigError naming the variable otherwise."""
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(f"{variable} must be a whole number, not {text!r}") from exc


def _same(value: Any) -> Any:
    """Return the value unchanged."""
    return value


def _count(value: float) -> int:
    """Return a count from a number read, dropping any fraction as the settings always have."""
    return int(value)


def _count_or_none(value: float | None) -> int | None:
    """Return a count from a number read, or None when there is none."""
    return None if value is None else int(value)


def _days_to_seconds(days: float) -> float:
    """Return a number of days in seconds."""
    return days * SECONDS_PER_DAY


def _days_to_whole_seconds(days: float) -> int:
    """Return a number of days in whole seconds."""
    return round(days * SECONDS_PER_DAY)


def _dead_letter_of_files(values: Mapping[str, Any]) -> str:
    """Return the files queue's dead-letter queue name: the files queue's, suffixed."""
    return values["files_queue"] + FILES_DEAD_LETTER_SUFFIX


def _failed_of_files(values: Mapping[str, Any]) -> str:
    """Return the name of the queue the failed asynchronous invocations of on_behaviour_file go to."""
    return values["files_queue"] + FILES_FAILED_SUFFIX


def _mib_to_bytes(mib: float) -> int:
    """Return a number of MiB in whole bytes."""
    return round(mib * (1 << 20))


def _optional_mib(mib: float | None) -> int | None:
    """Return a number of MiB in whole bytes, None staying None (derived where it is used)."""
    return None if mib is None else _mib_to_bytes(mib)


def _optional_count(value: float | None) -> int | None:
    """Return a count, None staying None (derived where it is used)."""
    return None if value is None else int(value)


def _budget_from_memory(values: Mapping[str, Any]) -> int:
    """Return the bytes one file may take in memory, from the function's memory."""
    return _mib_to_bytes(file_memory_budget_mb(values["function_memory_mb"]))


def _inflation_from_budget(values: Mapping[str, Any]) -> int:
    """Return the decompressed bytes a gzip file may reach, from the file memory budget."""
    return inflation_limit(values["file_memory_budget_bytes"])


@dataclass(frozen=True)
class Variable:
    """How one setting is read: its variable, how its text is parsed and bounded, and what stands in when unset."""

    name: str
    parse: Callable[[str, str], Any] = _text
    # In the variable's unit (days for *_DAYS); _NO_DEFAULT: none (the field is required, or falls back).
    default: Any = _NO_DEFAULT
    minimum: float | None = None
    # From the variable's unit to the field's (days to seconds, a number to a count).
    convert: Callable[[Any], Any] = _same
    required: bool = False
    # The field whose value this one takes when its variable is unset or empty.
    fallback: str | None = None
    # Computes the value from the fields read before, when the variable is unset or empty; `default` is then
    # what it computes from theirs.
    derive: Callable[[Mapping[str, Any]], Any] | None = None

    def read(self, env: Mapping[str, str], values: Mapping[str, Any]) -> Any:
        """Return the field's value from `env` (an unset or empty variable takes the fallback, derived or default)."""
        text = env.get(self.name)
        if not text:
            if self.fallback:
                return values[self.fallback]
            return self.derive(values) if self.derive else self.convert(self.default)
        value = self.parse(self.name, text)
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} must be at least {self.minimum:g}, not {value:g}")
        return self.convert(value)


def setting(
    name: str,
    parse: Callable[[str, str], Any] = _text,
    default: Any = _NO_DEFAULT,
    *,
    minimum: float | None = None,
    convert: Callable[[Any], Any] = _same,
    required: bool = False,
    fallback: str | None = None,
    derive: Callable[[Mapping[str, Any]], Any] | None = None,
) -> Any:
    """Return a dataclass field read from environment variable `name`, its default being `default` converted."""
    variable = Variable(name, parse, default, minimum, convert, required, fallback, derive)
    metadata = {"variable": variable}
    if default is _NO_DEFAULT:
        return field(metadata=metadata)
    return field(default=convert(default), metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the AWS path needs to know about where things live and how hard to push."""

    behaviour_bucket: str = setting("BEHAVIOUR_BUCKET", required=True)
    incoming_prefix: str = setting("INCOMING_PREFIX", _prefix, DEFAULT_INCOMING_PREFIX)
    risk_table: str = setting("RISK_TABLE", required=True)
    state_table: str = setting("STATE_TABLE", fallback="risk_table")
    queue_high: str = setting("QUEUE_HIGH", required=True)
    queue_medium: str = setting("QUEUE_MEDIUM", required=True)
    # Where account-manager tasks go; None: to the queue of their risk tier, marked by the channel attribute.
    queue_account_manager: str | None = setting("QUEUE_ACCOUNT_MANAGER", default=None)
    # Files younger than this are left to their own S3 trigger by the schedule's sweep.
    sweep_min_age_seconds: float = setting("SWEEP_MIN_AGE_SECONDS", _number, 900.0)
    # A file whose processing failed this many attempts in a row, with no checkpoint between, is quarantined
    # by its next attempt instead of being retried for ever (Lambda's own retries make three attempts).
    max_file_attempts: int = setting("MAX_FILE_ATTEMPTS", _number, 3, minimum=1, convert=_count)
    # Events later than the file's landing time by more than this are rejected as future-dated.
    future_tolerance_seconds: float = setting("FUTURE_TOLERANCE_SECONDS", _number, 86400.0)
    # The function's memory in MB, which Lambda sets; the two in-memory limits below follow from it.
    function_memory_mb: int = setting(
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", _number, DEFAULT_FUNCTION_MEMORY_MB, minimum=128, convert=_count
    )
    # What one file's events and users may take in memory (ingest/budget.py); past it, the file is refused
    # as too_large while it is read.
    file_memory_budget_bytes: int = setting(
        "FILE_MEMORY_BUDGET_MB",
        _number,
        file_memory_budget_mb(DEFAULT_FUNCTION_MEMORY_MB),
        minimum=1,
        convert=_mib_to_bytes,
        derive=_budget_from_memory,
    )
    # A gzip file inflating past this many bytes is quarantined instead of read.
    max_decompressed_bytes: int = setting(
        "MAX_DECOMPRESSED_BYTES",
        _whole,
        inflation_limit(_mib_to_bytes(file_memory_budget_mb(DEFAULT_FUNCTION_MEMORY_MB))),
        minimum=1,
        derive=_inflation_from_budget,
    )
    # For how long a state item remembers the runs merged into it (see applied_runs): a redo within this time,
    # whatever came between, never merges twice. It must cover Lambda's retries (6 h) and the daily sweep.
    applied_runs_max_age: float = setting(
        "APPLIED_RUNS_MAX_AGE_DAYS", _number, 2.0, minimum=1.0, convert=_days_to_seconds
    )
    # Conditional writes in flight at once (each one PutItem or UpdateItem call).
    write_concurrency: int = setting("WRITE_CONCURRENCY", _number, 16, minimum=1, convert=_count)
    # Seconds an invocation keeps free at its end to write its checkpoint.
    checkpoint_reserve_seconds: float = setting("CHECKPOINT_RESERVE_SECONDS", _number, 20.0, minimum=0.0)
    # The playbook file (None: the packaged default) and the S3 key of the opt-out list.
    playbook_file: str | None = setting("PLAYBOOK_FILE", default=None)
    opt_out_key: str = setting("OPT_OUT_KEY", default="suppression/opt-out.csv")
    # A user with no event for longer than this is forgotten: their state and risk items carry `expires_at`
    # (latest event + this, epoch seconds), which DynamoDB TTL deletes them by, and the schedule skips them.
    retention_seconds: int = setting(
        "RETENTION_DAYS",
        _number,
        DEFAULT_RETENTION_DAYS,
        minimum=RETENTION_FLOOR_DAYS,
        convert=_days_to_whole_seconds,
    )
    # Users per chunk: the unit of checkpointing and of state reads.
    chunk_users: int = setting("CHUNK_USERS", _number, 1000, minimum=1, convert=_count)
    # Files of closed exposures one schedule moves into the archive (runs/closed_archive.py), about a GET each. A
    # schedule writes at most one a chunk, so 20,000 keeps up with 20 M users re-scored daily; the rest wait a day.
    closed_archive_files: int = setting("CLOSED_ARCHIVE_FILES", _number, 20_000, minimum=0, convert=_count)
    # The state machines that spread a run over many functions (infra/statemachines/); unset: not deployed, and
    # every run stays in one invocation.
    backfill_state_machine_arn: str | None = setting("BACKFILL_STATE_MACHINE_ARN", default=None)
    schedule_state_machine_arn: str | None = setting("SCHEDULE_STATE_MACHINE_ARN", default=None)
    # A file past this many (decompressed) bytes goes to the backfill state machine; unset: derived from the
    # memory budget and the invocation's time left (runs/backfill/routing.py).
    backfill_threshold_bytes: int | None = setting(
        "BACKFILL_THRESHOLD_MB", _number, None, minimum=0.001, convert=_optional_mib
    )
    # The size of one range of a backfill; unset: as much as one range child can hold whatever its rows are.
    backfill_range_bytes: int | None = setting("BACKFILL_RANGE_MB", _number, None, minimum=0.001, convert=_optional_mib)
    # Shards of a backfill's users; unset: twice the ranges, so a shard holds about half a range's events.
    backfill_shards: int | None = setting("BACKFILL_SHARDS", _number, None, minimum=1, convert=_optional_count)
    # Users one invocation of the schedule re-scores per second (measured: about 1,000 a second on DynamoDB, at
    # 0.5-1.0 s per page of 1,000); with the invocation's time it sets how many users one invocation covers.
    # make benchmark: 442-463 users a second per worker at 10 ms a DynamoDB call (557-599 at 5 ms).
    schedule_users_per_second: float = setting("SCHEDULE_USERS_PER_SECOND", _number, 450.0, minimum=1.0)
    # Users one invocation of the schedule covers, instead of the figure derived from the rate and the time: a
    # table with more goes to the schedule state machine, in segments of at most this many.
    schedule_invocation_users: int | None = setting(
        "SCHEDULE_INVOCATION_USERS", _number, None, minimum=1, convert=_count_or_none
    )
    # At most this many segments of the schedule run at once (the map's MaxConcurrency, passed in by the plan).
    schedule_max_concurrency: int = setting("SCHEDULE_MAX_CONCURRENCY", _number, 40, minimum=1, convert=_count)
    # The stream of landed files through SQS (on_behaviour_queue), and the queues the schedule's sweep drains for
    # files whose delivery failed: the files queue's dead-letter queue, and the on-failure destination of
    # on_behaviour_file's asynchronous invocations. A queue that does not exist is skipped.
    files_queue: str = setting("FILES_QUEUE", default=DEFAULT_FILES_QUEUE)
    # Messages per invocation (SQS gives at most 10 without a batching window), and invocations at once at most
    # (the event source mapping's maximum concurrency, 2 to 1,000): read by app.py's decorator when packaged.
    files_batch_size: int = setting("FILES_BATCH_SIZE", _number, 10, minimum=1, convert=_count)
    files_max_concurrency: int = setting("FILES_MAX_CONCURRENCY", _number, 10, minimum=2, convert=_count)
    files_dead_letter_queue: str = setting(
        "FILES_DEAD_LETTER_QUEUE", default=DEFAULT_FILES_QUEUE + FILES_DEAD_LETTER_SUFFIX, derive=_dead_letter_of_files
    )
    files_failed_queue: str = setting(
        "FILES_FAILED_QUEUE", default=DEFAULT_FILES_QUEUE + FILES_FAILED_SUFFIX, derive=_failed_of_files
    )
    # Messages of those queues one sweep handles at most; the rest wait for the next one.
    sweep_max_messages: int = setting("SWEEP_MAX_MESSAGES", _number, 100, minimum=0, convert=_count)
    # Keys of the incoming prefix one sweep lists at most, resuming where the last stopped, to find files whose
    # notification never came (0: no listing at all); only files younger than the ledger's retention qualify.
    sweep_list_max_keys: int = setting("SWEEP_LIST_MAX_KEYS", _number, 10000, minimum=0, convert=_count)
    # How long the ledger remembers a processed object content (its items' TTL). It must outlast every way a file
    # can come back (docs/operations.md); a file that landed longer ago than this, less a day, is not processed.
    ledger_retention_seconds: int = setting(
        "LEDGER_RETENTION_DAYS", _number, 35, minimum=15, convert=_days_to_whole_seconds
    )
    # Capped exponential backoff with full jitter: the first delay, and the cap on any one delay.
    retry_base_delay_seconds: float = setting("RETRY_BASE_DELAY_SECONDS", _number, BASE_DELAY, minimum=0.0)
    retry_max_delay_seconds: float = setting("RETRY_MAX_DELAY_SECONDS", _number, MAX_DELAY, minimum=0.0)

    @property
    def snapshot_prefix(self) -> str:
        """Return the key prefix of full-snapshot files, under the incoming prefix."""
        return f"{self.incoming_prefix}snapshots/"

    @property
    def queues(self) -> dict[str, str]:
        """Return queue name by destination: the actionable risk tiers, and account-manager tasks if routed apart."""
        queues = {"high": self.queue_high, "medium": self.queue_medium}
        if self.queue_account_manager:
            queues["account_manager"] = self.queue_account_manager
        return queues

    @property
    def state_machines(self) -> dict[str, str]:
        """Return the ARN of each deployed state machine, by the name a run asks for."""
        arns = {"backfill": self.backfill_state_machine_arn, "schedule": self.schedule_state_machine_arn}
        return {machine: arn for machine, arn in arns.items() if arn}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, unused: Collection[str] = ()) -> Settings:
        """Build settings from environment variables; raise ConfigError naming what is missing or malformed.

        A required variable named in `unused` (by a command that never reaches what it names: `report` and the
        queues) may be unset, and is then the empty string; the functions pass none.
        """
        env = os.environ if env is None else env
        missing = [
            variable.name
            for variable in VARIABLES.values()
            if variable.required and not env.get(variable.name) and variable.name not in unused
        ]
        if missing:
            raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
        values: dict[str, Any] = {}
        for name, variable in VARIABLES.items():  # in field order, so a fallback's field is read first
            skipped = variable.required and variable.name in unused and not env.get(variable.name)
            values[name] = "" if skipped else variable.read(env, values)
        return cls(**values)


# The table: each field's variable, in field order.
VARIABLES: Mapping[str, Variable] = MappingProxyType({f.name: f.metadata["variable"] for f in fields(Settings)})
# Each field's default, in the field's unit (seconds for the *_DAYS variables): import these, never repeat them.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
)


def read_one(field_name: str, env: Mapping[str, str] | None = None) -> Any:
    """Return one setting without a fallback (RISK_TABLE for the risk lookup), read as `Settings.from_env` reads it;
    raise ConfigError when it is required and unset. For a reader that needs nothing else of the environment."""
    env = os.environ if env is None else env
    variable = VARIABLES[field_name]
    if variable.fallback or variable.derive:
        raise ValueError(f"{field_name} depends on other settings: read them all with Settings.from_env")
    if variable.required and not env.get(variable.name):
        raise ConfigError(f"missing environment variable(s): {variable.name}")
    return variable.read(env, {})
