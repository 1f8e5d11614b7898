"""Settings read once from the environment and validated at the edge."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.errors import ChurnGuardError
from chalicelib.ingest import DEFAULT_MAX_DECOMPRESSED_BYTES

DEFAULT_INCOMING_PREFIX = "incoming/"
DEFAULT_SCHEDULE = "rate(1 day)"
DEFAULT_RETENTION_DAYS = 730
# Retention may not be shorter than this: it must outlast, with room to spare, every window the code waits
# out or measures after a user's last event (the model's outcome horizon, the playbook's cooldowns).
RETENTION_FLOOR_DAYS = 90


class ConfigError(ChurnGuardError):
    """A missing or malformed setting."""


@dataclass(frozen=True)
class Settings:
    """Everything the AWS path needs to know about where things live."""

    behaviour_bucket: str
    incoming_prefix: str
    risk_table: str
    state_table: str
    queue_high: str
    queue_medium: str
    # Where account-manager tasks go; None: to the queue of their risk tier, marked by the channel attribute.
    queue_account_manager: str | None = None
    # Files younger than this are left to their own S3 trigger by the schedule's sweep.
    sweep_min_age_seconds: float = 900.0
    # Events later than the file's landing time by more than this are rejected as future-dated.
    future_tolerance_seconds: float = 86400.0
    # A gzip file inflating past this many bytes is quarantined instead of read.
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES
    # How many recently merged runs a state item remembers, and for how long (see applied_runs).
    applied_runs_keep: int = 32
    applied_runs_max_age: float = 7 * 86400.0
    # Conditional writes in flight at once (each one PutItem or UpdateItem call).
    write_concurrency: int = 16
    # Seconds an invocation keeps free at its end to write its checkpoint.
    checkpoint_reserve_seconds: float = 20.0
    # The playbook file (None: the packaged default) and the S3 key of the opt-out list.
    playbook_file: str | None = None
    opt_out_key: str = "suppression/opt-out.csv"
    # A user with no event for longer than this is forgotten: their state and risk items carry `expires_at`
    # (latest event + this, epoch seconds), which DynamoDB TTL deletes them by, and the schedule skips them.
    retention_seconds: int = DEFAULT_RETENTION_DAYS * 86400

    @property
    def snapshot_prefix(self) -> str:
        return f"{self.incoming_prefix}snapshots/"

    @property
    def queues(self) -> dict[str, str]:
        """Return queue name by destination: the actionable risk tiers, and account-manager tasks if routed apart."""
        queues = {"high": self.queue_high, "medium": self.queue_medium}
        if self.queue_account_manager:
            queues["account_manager"] = self.queue_account_manager
        return queues

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; raise ConfigError naming what is missing."""
        env = os.environ if env is None else env
        required = ("BEHAVIOUR_BUCKET", "RISK_TABLE", "QUEUE_HIGH", "QUEUE_MEDIUM")
        missing = [name for name in required if not env.get(name)]
        if missing:
            raise ConfigError(f"missing environment variable(s): {', '.join(missing)}")
        prefix = env.get("INCOMING_PREFIX") or DEFAULT_INCOMING_PREFIX
        if not prefix.endswith("/"):
            prefix += "/"
        min_age = _number(env, "SWEEP_MIN_AGE_SECONDS", 900.0)
        tolerance = _number(env, "FUTURE_TOLERANCE_SECONDS", 86400.0)
        keep = int(_number(env, "APPLIED_RUNS_KEEP", 32, minimum=1))
        max_age_days = _number(env, "APPLIED_RUNS_MAX_AGE_DAYS", 7.0, minimum=1.0)
        concurrency = int(_number(env, "WRITE_CONCURRENCY", 16, minimum=1))
        reserve = _number(env, "CHECKPOINT_RESERVE_SECONDS", 20.0, minimum=0.0)
        retention_days = _number(env, "RETENTION_DAYS", DEFAULT_RETENTION_DAYS, minimum=RETENTION_FLOOR_DAYS)
        try:
            max_inflated = int(env.get("MAX_DECOMPRESSED_BYTES") or DEFAULT_MAX_DECOMPRESSED_BYTES)
        except ValueError as exc:
            raise ConfigError(f"MAX_DECOMPRESSED_BYTES must be a whole number of bytes: {exc}") from exc
        if max_inflated < 1:
            raise ConfigError(f"MAX_DECOMPRESSED_BYTES must be positive, not {max_inflated}")
        return cls(
            behaviour_bucket=env["BEHAVIOUR_BUCKET"],
            incoming_prefix=prefix,
            risk_table=env["RISK_TABLE"],
            state_table=env.get("STATE_TABLE") or env["RISK_TABLE"],
            queue_high=env["QUEUE_HIGH"],
            queue_medium=env["QUEUE_MEDIUM"],
            queue_account_manager=env.get("QUEUE_ACCOUNT_MANAGER") or None,
            sweep_min_age_seconds=min_age,
            future_tolerance_seconds=tolerance,
            max_decompressed_bytes=max_inflated,
            applied_runs_keep=keep,
            applied_runs_max_age=max_age_days * 86400.0,
            write_concurrency=concurrency,
            checkpoint_reserve_seconds=reserve,
            playbook_file=env.get("PLAYBOOK_FILE") or None,
            opt_out_key=env.get("OPT_OUT_KEY") or "suppression/opt-out.csv",
            retention_seconds=round(retention_days * 86400),
        )


def _number(env: Mapping[str, str], name: str, default: float, minimum: float | None = None) -> float:
    """Return a numeric setting; raise ConfigError naming it when it is not a number or too small."""
    text = env.get(name)
    try:
        value = float(text) if text else float(default)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, not {text!r}") from exc
    if not math.isfinite(value):  # float() takes "nan" and "inf", and nan passes any minimum
        raise ConfigError(f"{name} must be a finite number, not {text!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, not {value:g}")
    return value
