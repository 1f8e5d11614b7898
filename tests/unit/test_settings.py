"""Settings are read once from the environment; a bad value names the variable."""

from __future__ import annotations

import json

import pytest

from chalicelib.retention.playbook import load_playbook
from chalicelib.settings import DEFAULTS, RETENTION_FLOOR_DAYS, VARIABLES, ConfigError, Settings
from tests.conftest import ROOT

BASE = {"BEHAVIOUR_BUCKET": "b", "RISK_TABLE": "risk", "QUEUE_HIGH": "qh", "QUEUE_MEDIUM": "qm"}
# For every variable of the table: a value a deployment might set, and the field it must land in, as what.
SAMPLES = {
    "BEHAVIOUR_BUCKET": ("behaviour_bucket", "acme-behaviour", "acme-behaviour"),
    "INCOMING_PREFIX": ("incoming_prefix", "landing", "landing/"),
    "RISK_TABLE": ("risk_table", "acme-risk", "acme-risk"),
    "STATE_TABLE": ("state_table", "acme-state", "acme-state"),
    "QUEUE_HIGH": ("queue_high", "acme-high", "acme-high"),
    "QUEUE_MEDIUM": ("queue_medium", "acme-medium", "acme-medium"),
    "QUEUE_ACCOUNT_MANAGER": ("queue_account_manager", "acme-am", "acme-am"),
    "SWEEP_MIN_AGE_SECONDS": ("sweep_min_age_seconds", "120", 120.0),
    "MAX_FILE_ATTEMPTS": ("max_file_attempts", "5", 5),
    "FUTURE_TOLERANCE_SECONDS": ("future_tolerance_seconds", "3600.5", 3600.5),
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": ("function_memory_mb", "1024", 1024),
    "FILE_MEMORY_BUDGET_MB": ("file_memory_budget_bytes", "64", 64 << 20),
    "MAX_DECOMPRESSED_BYTES": ("max_decompressed_bytes", "65536", 65536),
    "APPLIED_RUNS_MAX_AGE_DAYS": ("applied_runs_max_age", "3.5", 3.5 * 86400),
    "WRITE_CONCURRENCY": ("write_concurrency", "4", 4),
    "CHECKPOINT_RESERVE_SECONDS": ("checkpoint_reserve_seconds", "45", 45.0),
    "PLAYBOOK_FILE": ("playbook_file", "/opt/playbook.json", "/opt/playbook.json"),
    "OPT_OUT_KEY": ("opt_out_key", "lists/opt-out.csv", "lists/opt-out.csv"),
    "RETENTION_DAYS": ("retention_seconds", "365", 365 * 86400),
    "CHUNK_USERS": ("chunk_users", "250", 250),
    "CLOSED_ARCHIVE_FILES": ("closed_archive_files", "500", 500),
    "BACKFILL_STATE_MACHINE_ARN": (
        "backfill_state_machine_arn",
        "arn:aws:states:eu-west-1:123456789012:stateMachine:churnguard-dev-backfill",
        "arn:aws:states:eu-west-1:123456789012:stateMachine:churnguard-dev-backfill",
    ),
    "SCHEDULE_STATE_MACHINE_ARN": (
        "schedule_state_machine_arn",
        "arn:aws:states:eu-west-1:123456789012:stateMachine:churnguard-dev-schedule",
        "arn:aws:states:eu-west-1:123456789012:stateMachine:churnguard-dev-schedule",
    ),
    "BACKFILL_THRESHOLD_MB": ("backfill_threshold_bytes", "512", 512 << 20),
    "BACKFILL_RANGE_MB": ("backfill_range_bytes", "64", 64 << 20),
    "BACKFILL_SHARDS": ("backfill_shards", "256", 256),
    "SCHEDULE_USERS_PER_SECOND": ("schedule_users_per_second", "2500", 2500.0),
    "SCHEDULE_INVOCATION_USERS": ("schedule_invocation_users", "200000", 200000),
    "SCHEDULE_MAX_CONCURRENCY": ("schedule_max_concurrency", "100", 100),
    "FILES_QUEUE": ("files_queue", "acme-files", "acme-files"),
    "FILES_BATCH_SIZE": ("files_batch_size", "5", 5),
    "FILES_MAX_CONCURRENCY": ("files_max_concurrency", "50", 50),
    "FILES_DEAD_LETTER_QUEUE": ("files_dead_letter_queue", "acme-files-dead", "acme-files-dead"),
    "FILES_FAILED_QUEUE": ("files_failed_queue", "acme-files-failed", "acme-files-failed"),
    "SWEEP_MAX_MESSAGES": ("sweep_max_messages", "20", 20),
    "SWEEP_LIST_MAX_KEYS": ("sweep_list_max_keys", "0", 0),
    "LEDGER_RETENTION_DAYS": ("ledger_retention_seconds", "20", 20 * 86400),
    "RETRY_BASE_DELAY_SECONDS": ("retry_base_delay_seconds", "0.2", 0.2),
    "RETRY_MAX_DELAY_SECONDS": ("retry_max_delay_seconds", "30", 30.0),
}
NUMERIC = [v.name for v in VARIABLES.values() if isinstance(SAMPLES[v.name][2], int | float)]
BOUNDED = [(v.name, v.minimum) for v in VARIABLES.values() if v.minimum is not None]


def test_every_setting_of_the_table_is_read_from_its_variable():
    # GIVEN the table covers exactly the variables sampled here (a new setting needs a sample)
    assert {v.name for v in VARIABLES.values()} == set(SAMPLES)
    for field_name, variable in VARIABLES.items():
        sampled_field, text, expected = SAMPLES[variable.name]
        # WHEN only that variable is set beyond the required ones
        settings = Settings.from_env({**BASE, variable.name: text})
        # THEN it lands in its field, parsed and converted, and differs from what stands in when it is unset
        assert field_name == sampled_field
        assert getattr(settings, field_name) == expected, variable.name
        assert type(getattr(settings, field_name)) is type(expected), variable.name
        assert getattr(Settings.from_env(BASE), field_name) != expected, variable.name


def test_a_minimal_environment_gives_exactly_the_dataclass_defaults():
    # GIVEN only the required variables, and the same names handed to the constructor
    from_env = Settings.from_env(BASE)
    constructed = Settings(
        behaviour_bucket="b", risk_table="risk", state_table="risk", queue_high="qh", queue_medium="qm"
    )

    # THEN both agree field for field, and each default is the one DEFAULTS publishes
    assert from_env == constructed
    assert {name: getattr(from_env, name) for name in DEFAULTS} == dict(DEFAULTS)
    assert DEFAULTS["write_concurrency"] == 16 and DEFAULTS["checkpoint_reserve_seconds"] == 20.0


def test_every_default_is_written_once_in_the_variables_unit():
    for field_name, default in DEFAULTS.items():
        variable = VARIABLES[field_name]
        assert variable.convert(variable.default) == default, variable.name


def test_chunking_and_backoff_settings_have_their_defaults():
    settings = Settings.from_env(BASE)
    assert settings.chunk_users == 1000
    assert (settings.retry_base_delay_seconds, settings.retry_max_delay_seconds) == (0.05, 5.0)
    no_wait = Settings.from_env({**BASE, "RETRY_BASE_DELAY_SECONDS": "0", "RETRY_MAX_DELAY_SECONDS": "0"})
    assert (no_wait.retry_base_delay_seconds, no_wait.retry_max_delay_seconds) == (0.0, 0.0)


def test_defaults_fill_what_the_environment_leaves_out():
    settings = Settings.from_env(BASE)
    assert settings.state_table == "risk" and settings.incoming_prefix == "incoming/"
    assert settings.applied_runs_max_age == 2 * 86400.0
    assert (settings.write_concurrency, settings.checkpoint_reserve_seconds) == (16, 20.0)
    assert settings.retention_seconds == 730 * 86400


def test_account_manager_tasks_get_their_own_queue_only_when_one_is_named():
    assert list(Settings.from_env(BASE).queues) == ["high", "medium"]
    routed = Settings.from_env({**BASE, "QUEUE_ACCOUNT_MANAGER": "qam"})
    assert routed.queues == {"high": "qh", "medium": "qm", "account_manager": "qam"}


def test_delivery_settings_are_read():
    env = {
        **BASE,
        "APPLIED_RUNS_MAX_AGE_DAYS": "3",
        "WRITE_CONCURRENCY": "4",
        "CHECKPOINT_RESERVE_SECONDS": "45",
    }
    settings = Settings.from_env(env)
    assert settings.applied_runs_max_age == 3 * 86400.0
    assert (settings.write_concurrency, settings.checkpoint_reserve_seconds) == (4, 45.0)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WRITE_CONCURRENCY", "many", "WRITE_CONCURRENCY must be a number, not 'many'"),
        ("WRITE_CONCURRENCY", "0", "WRITE_CONCURRENCY must be at least 1"),
        ("APPLIED_RUNS_MAX_AGE_DAYS", "0.5", "APPLIED_RUNS_MAX_AGE_DAYS must be at least 1"),
        ("CHECKPOINT_RESERVE_SECONDS", "-1", "CHECKPOINT_RESERVE_SECONDS must be at least 0"),
        ("SWEEP_MIN_AGE_SECONDS", "soon", "SWEEP_MIN_AGE_SECONDS must be a number"),
        ("RETENTION_DAYS", "30", "RETENTION_DAYS must be at least 90, not 30"),
        ("RETENTION_DAYS", "two years", "RETENTION_DAYS must be a number, not 'two years'"),
        ("RETENTION_DAYS", "nan", "RETENTION_DAYS must be a finite number"),
        ("RETENTION_DAYS", "inf", "RETENTION_DAYS must be a finite number"),
        ("MAX_DECOMPRESSED_BYTES", "0", "MAX_DECOMPRESSED_BYTES must be at least 1, not 0"),
        ("MAX_DECOMPRESSED_BYTES", "lots", "MAX_DECOMPRESSED_BYTES must be a whole number, not 'lots'"),
        ("CHUNK_USERS", "0", "CHUNK_USERS must be at least 1, not 0"),
        ("CHUNK_USERS", "all", "CHUNK_USERS must be a number, not 'all'"),
        ("RETRY_BASE_DELAY_SECONDS", "-0.01", "RETRY_BASE_DELAY_SECONDS must be at least 0, not -0.01"),
        ("RETRY_MAX_DELAY_SECONDS", "-1", "RETRY_MAX_DELAY_SECONDS must be at least 0, not -1"),
        ("RETRY_MAX_DELAY_SECONDS", "nan", "RETRY_MAX_DELAY_SECONDS must be a finite number"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value, says):
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({**BASE, name: value})


@pytest.mark.parametrize(("name", "minimum"), BOUNDED)
def test_a_value_below_its_bound_is_refused_naming_the_variable(name, minimum):
    below = minimum - 1 if name == "MAX_DECOMPRESSED_BYTES" else minimum - 0.5
    with pytest.raises(ConfigError, match=f"^{name} must be at least {minimum:g}, not {below:g}$"):
        Settings.from_env({**BASE, name: f"{below:g}"})


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "ten"])
def test_a_number_that_is_not_finite_is_refused_naming_the_variable(name, text):
    with pytest.raises(ConfigError, match=f"^{name} must be a "):
        Settings.from_env({**BASE, name: text})


@pytest.mark.parametrize("text", ["1.5", "1e9", "4 GiB", "nan"])
def test_the_decompression_limit_must_be_a_whole_number_of_bytes(text):
    with pytest.raises(ConfigError, match=f"MAX_DECOMPRESSED_BYTES must be a whole number, not '{text}'"):
        Settings.from_env({**BASE, "MAX_DECOMPRESSED_BYTES": text})


@pytest.mark.parametrize(
    ("name", "field_name", "expected"),
    [
        ("INCOMING_PREFIX", "incoming_prefix", "incoming/"),
        ("STATE_TABLE", "state_table", "risk"),
        ("QUEUE_ACCOUNT_MANAGER", "queue_account_manager", None),
        ("PLAYBOOK_FILE", "playbook_file", None),
        ("OPT_OUT_KEY", "opt_out_key", "suppression/opt-out.csv"),
        ("CHUNK_USERS", "chunk_users", 1000),
        ("CLOSED_ARCHIVE_FILES", "closed_archive_files", 20000),
        ("RETENTION_DAYS", "retention_seconds", 730 * 86400),
    ],
)
def test_an_empty_variable_counts_as_unset(name, field_name, expected):
    assert getattr(Settings.from_env({**BASE, name: ""}), field_name) == expected


def test_a_prefix_already_ending_in_a_slash_is_kept_as_it_is():
    settings = Settings.from_env({**BASE, "INCOMING_PREFIX": "landing/"})
    assert (settings.incoming_prefix, settings.snapshot_prefix) == ("landing/", "landing/snapshots/")


def test_an_empty_required_variable_counts_as_missing():
    with pytest.raises(ConfigError, match=r"^missing environment variable\(s\): BEHAVIOUR_BUCKET$"):
        Settings.from_env({**BASE, "BEHAVIOUR_BUCKET": ""})


def test_missing_required_variables_are_named():
    with pytest.raises(ConfigError, match="QUEUE_HIGH, QUEUE_MEDIUM"):
        Settings.from_env({"BEHAVIOUR_BUCKET": "b", "RISK_TABLE": "r"})


def test_retention_is_read_in_days_and_kept_in_whole_seconds():
    assert Settings.from_env({**BASE, "RETENTION_DAYS": "365"}).retention_seconds == 365 * 86400
    assert Settings.from_env({**BASE, "RETENTION_DAYS": "90.5"}).retention_seconds == 90 * 86400 + 43200


def test_the_retention_floor_outlasts_the_outcome_horizon_and_every_cooldown():
    # GIVEN the packaged model and playbook: an exposed user's outcome is judged over the model's horizon,
    # and the playbook waits out a cooldown before contacting them again
    manifest = json.loads((ROOT / "model_artifacts" / "manifest.json").read_text())
    horizon_days = manifest["training_data"]["horizon_days"]
    cooldowns = load_playbook().contact_policy.cooldown_days.values()

    # THEN even the shortest retention allowed outlasts both
    assert horizon_days < RETENTION_FLOOR_DAYS
    assert max(cooldowns) < RETENTION_FLOOR_DAYS


def test_the_memory_limits_follow_from_the_function_memory_lambda_sets():
    from chalicelib.ingest.budget import BYTES_PER_EVENT, FIXED_MIB, HEADROOM, ROW_BYTES

    # GIVEN two functions, of 512 MB and of 4096 MB, with no limit set
    small = Settings.from_env({**BASE, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"})
    large = Settings.from_env({**BASE, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "4096"})
    # THEN a file may take what the function has beyond its fixed needs, less headroom, and inflate accordingly
    assert small.file_memory_budget_bytes == round((512 - FIXED_MIB) * HEADROOM * (1 << 20))
    assert small.max_decompressed_bytes == small.file_memory_budget_bytes // BYTES_PER_EVENT * ROW_BYTES
    assert large.file_memory_budget_bytes > 10 * small.file_memory_budget_bytes
    # AND the defaults are those of the dev stage's 2,048 MB: well under the old fixed 4 GiB of inflation
    default = Settings.from_env(BASE)
    assert default.function_memory_mb == 2048 and default.max_decompressed_bytes < 4 << 30
    assert default.file_memory_budget_bytes < 2048 << 20


def test_an_explicit_memory_limit_wins_over_the_derived_one():
    env = {**BASE, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}
    settings = Settings.from_env({**env, "FILE_MEMORY_BUDGET_MB": "1000", "MAX_DECOMPRESSED_BYTES": "123456"})
    assert settings.file_memory_budget_bytes == 1000 << 20 and settings.max_decompressed_bytes == 123456
    # the inflation limit follows an explicit budget when it is not set itself
    assert Settings.from_env({**env, "FILE_MEMORY_BUDGET_MB": "1000"}).max_decompressed_bytes > (
        Settings.from_env(env).max_decompressed_bytes
    )


def test_only_the_state_machines_a_stage_names_are_deployed():
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:churnguard-dev-schedule"

    assert Settings.from_env(BASE).state_machines == {}
    assert Settings.from_env({**BASE, "SCHEDULE_STATE_MACHINE_ARN": arn}).state_machines == {"schedule": arn}
