"""Key schemas: from a DescribeTable answer, from a handler's declaration, and their check."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.feeds import telemax
from consumer.pipeline import keys
from consumer.pipeline.keys import (
    KeyedHandler,
    check,
    declare_keys,
    declared_keys,
    key_names_of,
    spec_of,
)
from kernel.errors import ConfigError
from kernel.handlers import Item

TELEMAX = ("hardwareID", "Timestamp")
SPEC = "consumer.x:f"


def schema(*entries: tuple[str, str]) -> dict[str, Any]:
    """A DescribeTable answer with this KeySchema."""
    return {
        "Table": {
            "TableName": "T",
            "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in entries],
            "TableStatus": "ACTIVE",
        }
    }


# --- key_names_of --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        pytest.param(schema(("hardwareID", "HASH"), ("Timestamp", "RANGE")), TELEMAX, id="telemax"),
        pytest.param(
            schema(("Timestamp", "RANGE"), ("hardwareID", "HASH")), TELEMAX, id="range-1st"
        ),
        pytest.param(schema(("orderID", "HASH")), ("orderID",), id="hash-only"),
        pytest.param(schema(("orderID", "HASH"))["Table"], ("orderID",), id="table-element"),
    ],
)
def test_key_names_of(description: dict[str, Any], expected: tuple[str, ...]) -> None:
    assert key_names_of(description) == expected


@pytest.mark.parametrize(
    "description",
    [
        pytest.param({}, id="empty"),
        pytest.param({"Table": {"TableName": "T"}}, id="no-key-schema"),
        pytest.param(schema(("Timestamp", "RANGE")), id="range-without-hash"),
        pytest.param(schema(("a", "HASH"), ("b", "HASH")), id="two-hash"),
        pytest.param(schema(("a", "HASH"), ("b", "RANGE"), ("c", "RANGE")), id="two-range"),
        pytest.param(schema(("a", "PARTITION")), id="unknown-type"),
    ],
)
def test_key_names_of_refuses_what_is_not_a_key_schema(description: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="key schema"):
        key_names_of(description)


# --- check ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_table", "declared", "expected"),
    [
        pytest.param(TELEMAX, None, TELEMAX, id="table-only"),
        pytest.param(TELEMAX, TELEMAX, TELEMAX, id="agree"),
        pytest.param(("orderID",), ("orderID",), ("orderID",), id="agree-hash-only"),
        pytest.param(("orderID",), None, ("orderID",), id="undeclared-handler-other-table"),
        pytest.param(None, ("orderID",), ("orderID",), id="declaration-only"),
    ],
)
def test_check_answers_the_key(
    from_table: tuple[str, ...] | None,
    declared: tuple[str, ...] | None,
    expected: tuple[str, ...],
) -> None:
    assert check("TELEMAX", from_table, declared, SPEC) == expected


@pytest.mark.parametrize(
    ("from_table", "declared", "message"),
    [
        pytest.param(
            TELEMAX,
            ("orderID",),
            "TELEMAX_HANDLER consumer.x:f declares key (orderID) "
            "but table 'TELEMAX' is keyed by (hardwareID, Timestamp)",
            id="other-key",
        ),
        pytest.param(
            TELEMAX,
            ("Timestamp", "hardwareID"),
            "TELEMAX_HANDLER consumer.x:f declares key (Timestamp, hardwareID) "
            "but table 'TELEMAX' is keyed by (hardwareID, Timestamp)",
            id="order-matters",
        ),
        pytest.param(
            TELEMAX,
            ("hardwareID",),
            "TELEMAX_HANDLER consumer.x:f declares key (hardwareID) "
            "but table 'TELEMAX' is keyed by (hardwareID, Timestamp)",
            id="missing-sort-key",
        ),
        pytest.param(
            ("orderID",),
            TELEMAX,
            "TELEMAX_HANDLER consumer.x:f declares key (hardwareID, Timestamp) "
            "but table 'TELEMAX' is keyed by (orderID)",
            id="extra-sort-key",
        ),
        pytest.param(
            None,
            None,
            "cannot tell the key of table 'TELEMAX': it has no key schema here and "
            "TELEMAX_HANDLER consumer.x:f declares none",
            id="neither",
        ),
    ],
)
def test_check_disagreement_is_one_config_error_line(
    from_table: tuple[str, ...] | None, declared: tuple[str, ...] | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check("TELEMAX", from_table, declared, SPEC)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


# --- declaring -----------------------------------------------------------------------------------


def test_the_default_handler_declares_telemax_keys() -> None:
    assert declared_keys(telemax.to_item) == telemax.KEY_NAMES == TELEMAX
    assert spec_of(telemax.to_item) == "consumer.feeds.telemax:to_item"


def test_declare_keys_keeps_the_function() -> None:
    def orders(data: bytes) -> Item:
        return {"orderID": {"S": data.decode()}}

    declared = declare_keys("orderID")(orders)
    assert declared is orders
    assert declared(b"o-1") == {"orderID": {"S": "o-1"}}
    assert declared_keys(orders) == ("orderID",)


def test_undeclared_handler_declares_nothing() -> None:
    def plain(data: bytes) -> Item:
        return {}

    assert declared_keys(plain) is None


def test_a_handler_object_declares_with_an_attribute() -> None:
    class Orders:
        key_names = ("orderID", "line")

        def __call__(self, data: bytes, /) -> Item:
            return {}

    handler: KeyedHandler = Orders()  # type-checks as the protocol
    assert declared_keys(handler) == ("orderID", "line")


@pytest.mark.parametrize(
    "names",
    [
        pytest.param((), id="none"),
        pytest.param(("a", "b", "c"), id="three"),
        pytest.param(("",), id="empty-name"),
        pytest.param(("a", "a"), id="same-twice"),
    ],
)
def test_declare_keys_refuses_what_no_table_can_be_keyed_by(names: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="key"):
        declare_keys(*names)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("hardwareID", id="a-string"),
        pytest.param(["a", 1], id="not-strings"),
        pytest.param((), id="empty"),
    ],
)
def test_a_malformed_declaration_is_refused(value: object) -> None:
    class Odd:
        key_names = value

        def __call__(self, data: bytes, /) -> Item:
            return {}

    with pytest.raises(ValueError, match="key_names"):
        declared_keys(Odd())


def test_module_api() -> None:
    assert keys.KEY_NAMES_ATTRIBUTE == "key_names"
    assert callable(keys.table_key_names)
