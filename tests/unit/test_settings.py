"""Settings are read once from the environment; a bad value names the variable."""

from __future__ import annotations

import json

import pytest

from chalicelib.retention.playbook import load_playbook
from chalicelib.settings import RETENTION_FLOOR_DAYS, ConfigError, Settings
from tests.conftest import ROOT

BASE = {"BEHAVIOUR_BUCKET": "b", "RISK_TABLE": "risk", "QUEUE_HIGH": "qh", "QUEUE_MEDIUM": "qm"}


def test_defaults_fill_what_the_environment_leaves_out():
    settings = Settings.from_env(BASE)
    assert settings.state_table == "risk" and settings.incoming_prefix == "incoming/"
    assert (settings.applied_runs_keep, settings.applied_runs_max_age) == (32, 7 * 86400.0)
    assert (settings.write_concurrency, settings.checkpoint_reserve_seconds) == (16, 20.0)
    assert settings.retention_seconds == 730 * 86400


def test_account_manager_tasks_get_their_own_queue_only_when_one_is_named():
    assert list(Settings.from_env(BASE).queues) == ["high", "medium"]
    routed = Settings.from_env({**BASE, "QUEUE_ACCOUNT_MANAGER": "qam"})
    assert routed.queues == {"high": "qh", "medium": "qm", "account_manager": "qam"}


def test_delivery_settings_are_read():
    env = {
        **BASE,
        "APPLIED_RUNS_KEEP": "8",
        "APPLIED_RUNS_MAX_AGE_DAYS": "2",
        "WRITE_CONCURRENCY": "4",
        "CHECKPOINT_RESERVE_SECONDS": "45",
    }
    settings = Settings.from_env(env)
    assert (settings.applied_runs_keep, settings.applied_runs_max_age) == (8, 2 * 86400.0)
    assert (settings.write_concurrency, settings.checkpoint_reserve_seconds) == (4, 45.0)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WRITE_CONCURRENCY", "many", "WRITE_CONCURRENCY must be a number, not 'many'"),
        ("WRITE_CONCURRENCY", "0", "WRITE_CONCURRENCY must be at least 1"),
        ("APPLIED_RUNS_KEEP", "0", "APPLIED_RUNS_KEEP must be at least 1"),
        ("APPLIED_RUNS_MAX_AGE_DAYS", "0.5", "APPLIED_RUNS_MAX_AGE_DAYS must be at least 1"),
        ("CHECKPOINT_RESERVE_SECONDS", "-1", "CHECKPOINT_RESERVE_SECONDS must be at least 0"),
        ("SWEEP_MIN_AGE_SECONDS", "soon", "SWEEP_MIN_AGE_SECONDS must be a number"),
        ("RETENTION_DAYS", "30", "RETENTION_DAYS must be at least 90, not 30"),
        ("RETENTION_DAYS", "two years", "RETENTION_DAYS must be a number, not 'two years'"),
        ("RETENTION_DAYS", "nan", "RETENTION_DAYS must be a finite number"),
        ("RETENTION_DAYS", "inf", "RETENTION_DAYS must be a finite number"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value, says):
    with pytest.raises(ConfigError, match=says):
        Settings.from_env({**BASE, name: value})


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
