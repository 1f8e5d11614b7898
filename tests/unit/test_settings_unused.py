"""A command may declare required variables it never reaches (report and the queues); the functions declare none."""

from __future__ import annotations

import pytest

from chalicelib.settings import ConfigError, Settings

ENV = {"BEHAVIOUR_BUCKET": "b", "RISK_TABLE": "r", "QUEUE_HIGH": "qh", "QUEUE_MEDIUM": "qm"}
QUEUES = ("QUEUE_HIGH", "QUEUE_MEDIUM")


def test_variables_a_command_does_not_use_may_be_unset():
    # GIVEN an environment without the queues  WHEN a command that sends no message reads the settings
    env = {k: v for k, v in ENV.items() if k not in QUEUES}
    settings = Settings.from_env(env, unused=QUEUES)
    # THEN they read as empty, and what it does use is read as always
    assert (settings.queue_high, settings.queue_medium) == ("", "")
    assert (settings.behaviour_bucket, settings.state_table) == ("b", "r")


def test_a_variable_declared_unused_but_set_is_still_read():
    assert Settings.from_env(ENV, unused=QUEUES).queue_high == "qh"


def test_without_the_declaration_the_queues_are_still_required():
    # The functions (runtime.get_pipeline) read the settings with nothing declared unused.
    env = {k: v for k, v in ENV.items() if k not in QUEUES}
    with pytest.raises(ConfigError, match="missing environment variable\\(s\\): QUEUE_HIGH, QUEUE_MEDIUM"):
        Settings.from_env(env)


def test_what_a_command_uses_stays_required():
    with pytest.raises(ConfigError, match="BEHAVIOUR_BUCKET"):
        Settings.from_env({"RISK_TABLE": "r"}, unused=QUEUES)
