"""Alerts as the settings ask for them: the rules in force, and alerts off without a topic."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from consumer.config import load
from consumer.pipeline.alerting import alerting_for, rules_for
from kernel.errors import ConfigError

TOPIC = {"TELEMAX_ALERT_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:alerts"}


def test_no_topic_means_no_alerts() -> None:
    nothing: Any = None  # neither the clients nor the metrics are touched
    assert alerting_for(load("run", env={}), nothing, nothing, ("hardwareID",)) is None


def test_a_topic_without_rules_is_one_line() -> None:
    with pytest.raises(ConfigError) as raised:
        rules_for(load("run", env=TOPIC))
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        "TELEMAX_ALERT_TOPIC_ARN is set but feed telemax has no alert rules: "
        "set TELEMAX_ALERT_RULES"
    )


def test_the_feeds_rules_unless_the_settings_name_some() -> None:
    orders = load("run", env={**TOPIC, "TELEMAX_FEED": "orders"})
    assert [rule.name for rule in rules_for(orders)] == ["large_order"]
    chosen = load("run", env={**TOPIC, "TELEMAX_ALERT_RULES": '{"hot": "Data2 > `100`"}'})
    assert [rule.name for rule in rules_for(chosen)] == ["hot"]


def test_a_rule_that_does_not_compile_names_its_source() -> None:
    # (past the option's own check, which load() makes)
    bad = dataclasses.replace(load("run", env=TOPIC), alert_rules='{"r": "total >="}')
    with pytest.raises(ConfigError, match=r"^TELEMAX_ALERT_RULES: rule 'r' is not JMESPath"):
        rules_for(bad)
