"""Alert rules (JMESPath) and the alerts they raise: pure."""

from __future__ import annotations

import re
from decimal import Decimal

import orjson
import pytest

from consumer.feeds import orders
from consumer.pipeline.alerts import (
    MAX_BODY_BYTES,
    Alerter,
    alert,
    compile_rules,
    parse_rules,
    plain,
    record_of,
)
from kernel.errors import ConfigError
from kernel.handlers import Item
from producer.schemas import records


def order_item(total: float, order_id: str = "ORD-1", country: str = "DE") -> Item:
    return {
        "orderID": {"S": order_id},
        "total": {"N": repr(total)},
        "shipping": {"M": {"country": {"S": country}}},
        "items": {"L": [{"M": {"quantity": {"N": "2"}}}]},
    }


@pytest.mark.parametrize(
    ("expression", "total", "country", "matches"),
    [
        ("total >= `1000`", 1000.0, "DE", True),
        ("total >= `1000`", 999.99, "DE", False),
        ("shipping.country == 'NG'", 5.0, "NG", True),
        ("shipping.country == 'NG'", 5.0, "DE", False),
        ("total >= `100` && shipping.country != 'DE'", 500.0, "US", True),
        ("items[?quantity > `1`]", 1.0, "DE", True),  # a non-empty list is true
        ("items[?quantity > `5`]", 1.0, "DE", False),  # an empty one is false
        ("missing", 1.0, "DE", False),  # null is false
    ],
)
def test_rules_are_jmespath_with_its_truth(
    expression: str, total: float, country: str, matches: bool
) -> None:
    (rule,) = compile_rules({"r": expression}, "TELEMAX_ALERT_RULES")
    assert rule.matches(record_of(order_item(total, country=country))) is matches


def test_numbers_compare_exactly() -> None:
    (rule,) = compile_rules({"r": "total >= `1000`"}, "x")
    assert plain({"N": "999.9999999999999999999"}) == Decimal("999.9999999999999999999")
    assert not rule.matches({"total": plain({"N": "999.9999999999999999999"})})


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"r": "total >="}, "TELEMAX_ALERT_RULES: rule 'r' is not JMESPath:"),
        ({"bad name": "a"}, "TELEMAX_ALERT_RULES: rule name 'bad name': 1-64 of"),
    ],
)
def test_a_bad_rule_is_one_configuration_line(rules: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        compile_rules(rules, "TELEMAX_ALERT_RULES")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("raw", ["[1]", "{", '{"a": 1}'])
def test_rules_variable_must_be_an_object_of_strings(raw: str) -> None:
    with pytest.raises(ValueError, match="JSON"):
        parse_rules(raw)


def test_an_alert_carries_feed_rule_key_and_the_record() -> None:
    raised = alert("orders", "large_order", "ORD-1", record_of(order_item(1234.5)))
    assert raised.id == "orders|large_order|ORD-1"
    assert raised.subject == "telemax orders: large_order ORD-1"
    assert orjson.loads(raised.body) == {
        "feed": "orders",
        "rule": "large_order",
        "key": "ORD-1",
        "record": {
            "orderID": "ORD-1",
            "total": 1234.5,
            "shipping": {"country": "DE"},
            "items": [{"quantity": 2}],
        },
    }


def test_a_record_too_large_for_sns_is_named_not_sent_whole() -> None:
    huge = {"orderID": "ORD-1", "note": "x" * MAX_BODY_BYTES}
    raised = alert("orders", "r", "ORD-1", huge)
    body = orjson.loads(raised.body)
    assert body["record"] is None and "read it from the table by key" in body["truncated"]
    assert len(raised.body) < 1000


def test_subjects_are_ascii_one_line_and_short() -> None:
    raised = alert("orders", "r", "ORDÉ\n" + "k" * 200, {})
    assert raised.subject.isascii() and "\n" not in raised.subject
    assert len(raised.subject) == 100


def test_the_key_joins_the_key_values_in_schema_order() -> None:
    (rule,) = compile_rules({"hot": "Data2 > `90`"}, "x")
    alerter = Alerter("telemax", (rule,), ("hardwareID", "Timestamp"))
    items: list[Item] = [
        {"hardwareID": {"S": "HW-1"}, "Timestamp": {"S": "T1"}, "Data2": {"N": "95"}},
        {"hardwareID": {"S": "HW-2"}, "Timestamp": {"S": "T2"}, "Data2": {"N": "10"}},
        {"hardwareID": {"S": "HW-3"}, "Timestamp": {"S": "T3"}, "Data2": {"N": "99"}},
    ]
    raised = alerter.alerts(items, [0, 1])  # position 2 was not stored: no alert
    assert [(p, a.key, a.id) for p, a in raised] == [(0, "HW-1|T1", "telemax|hot|HW-1|T1")]


def test_every_large_generated_order_and_only_those_alert() -> None:
    rules = compile_rules(dict(orders.FEED.alerts), "feed orders")
    alerter = Alerter("orders", rules, ("orderID",))
    items = [orders.to_item(orjson.dumps(r)) for r, _ in records("orders", 500, seed=21)]
    raised = alerter.alerts(items, range(len(items)))
    large = [i for i, item in enumerate(items) if Decimal(item["total"]["N"]) >= 1000]
    assert large and [p for p, _ in raised] == large
