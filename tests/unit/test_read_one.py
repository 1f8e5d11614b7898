"""settings.read_one: one setting read as Settings.from_env reads it, for a reader that needs nothing else."""

from __future__ import annotations

import pytest

from chalicelib.settings import ConfigError, Settings, read_one


def test_one_setting_is_read_without_the_others_required():
    assert read_one("risk_table", {"RISK_TABLE": "risk"}) == "risk"
    assert read_one("chunk_users", {}) == Settings.__dataclass_fields__["chunk_users"].default


def test_a_required_setting_unset_or_empty_names_its_variable():
    for env in ({}, {"RISK_TABLE": ""}):
        with pytest.raises(ConfigError, match="RISK_TABLE"):
            read_one("risk_table", env)


def test_a_setting_that_falls_back_on_another_cannot_be_read_alone():
    with pytest.raises(ValueError, match="state_table"):
        read_one("state_table", {"RISK_TABLE": "risk"})
