"""Record-handler plumbing: JSON values -> attributes, item sizes, handler loading."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.feeds import telemax
from consumer.pipeline.records import MAX_ITEM_BYTES, attribute, item_size
from kernel.errors import ConfigError, InvalidRecord
from kernel.handlers import load_handler


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("text", {"S": "text"}, id="str"),
        pytest.param("", {"S": ""}, id="empty-str"),
        pytest.param(True, {"BOOL": True}, id="true-not-number"),
        pytest.param(False, {"BOOL": False}, id="false-not-number"),
        pytest.param(0, {"N": "0"}, id="zero"),
        pytest.param(-12, {"N": "-12"}, id="negative-int"),
        pytest.param(12.5, {"N": "12.5"}, id="float"),
        pytest.param(0.1, {"N": "0.1"}, id="float-shortest-repr"),
        pytest.param(None, {"NULL": True}, id="null"),
        pytest.param([], {"L": []}, id="empty-list"),
        pytest.param({}, {"M": {}}, id="empty-map"),
        pytest.param(
            [1, "a", [None]], {"L": [{"N": "1"}, {"S": "a"}, {"L": [{"NULL": True}]}]}, id="list"
        ),
        pytest.param(
            {"a": {"b": False}}, {"M": {"a": {"M": {"b": {"BOOL": False}}}}}, id="nested-map"
        ),
    ],
)
def test_attribute(value: Any, expected: dict[str, Any]) -> None:
    assert attribute(value) == expected


@pytest.mark.parametrize(
    "value", [b"bytes", {1, 2}, (1, 2), object()], ids=["bytes", "set", "tuple", "object"]
)
def test_attribute_rejects_non_json_values(value: Any) -> None:
    with pytest.raises(InvalidRecord) as caught:
        attribute(value)
    assert caught.value.reason == "wrong_type"
    assert type(value).__name__ in caught.value.detail


def test_attribute_rejects_nested_unsupported_value() -> None:
    with pytest.raises(InvalidRecord, match="wrong_type"):
        attribute({"ok": [1, b"no"]})


@pytest.mark.parametrize(
    ("item", "size"),
    [
        pytest.param({}, 0, id="empty"),
        pytest.param({"a": {"S": "xyz"}}, 1 + 3, id="string"),
        pytest.param({"ab": {"S": "é"}}, 2 + 2, id="utf8-bytes"),
        pytest.param({"n": {"N": "12345"}}, 1 + 4, id="number"),
        pytest.param({"n": {"N": "7"}}, 1 + 2, id="one-digit"),
        pytest.param({"b": {"BOOL": True}}, 1 + 1, id="bool"),
        pytest.param({"z": {"NULL": True}}, 1 + 1, id="null"),
        pytest.param({"d": {"B": b"\x00\x01\x02"}}, 1 + 3, id="binary"),
        pytest.param({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}, 1 + 3 + 3 + 3, id="list"),
        pytest.param({"m": {"M": {"k": {"S": "v"}}}}, 1 + 3 + 3, id="map"),
        pytest.param({"a": {"S": "x"}, "b": {"S": "yy"}}, 2 + 3, id="two-attributes"),
    ],
)
def test_item_size(item: dict[str, Any], size: int) -> None:
    assert item_size(item) == size


def test_item_size_grows_with_content() -> None:
    small = item_size({"blob": {"S": "x" * 100}})
    assert item_size({"blob": {"S": "x" * 101}}) == small + 1
    assert item_size({"blob": {"S": "x" * MAX_ITEM_BYTES}}) > MAX_ITEM_BYTES


def test_load_default_handler() -> None:
    assert load_handler("consumer.feeds.telemax:to_item") is telemax.to_item


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param("no.such.module:f", "cannot load record handler", id="no-module"),
        pytest.param("consumer.feeds.telemax:nope", "cannot load record handler", id="no-attr"),
        pytest.param("consumer.feeds.telemax", "cannot load record handler", id="no-colon"),
        pytest.param("consumer.feeds.telemax:KEY_NAMES", "is not callable", id="not-callable"),
    ],
)
def test_load_handler_errors(spec: str, message: str) -> None:
    """A wrong spec is an operator's error: one ConfigError line naming where it came from."""
    with pytest.raises(ConfigError, match=message) as caught:
        load_handler(spec, source="--handler")
    assert spec in str(caught.value)
    assert str(caught.value).startswith("--handler: ")


def test_invalid_record_message() -> None:
    assert str(InvalidRecord("not_json")) == "not_json"
    error = InvalidRecord("missing_field", "hardwareID")
    assert (error.reason, error.detail, str(error)) == (
        "missing_field",
        "hardwareID",
        "missing_field: hardwareID",
    )
