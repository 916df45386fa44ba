"""The default record handler: a TELEMAX reading as JSON -> a TELEMAX item.

Schema: ``hardwareID`` (non-empty string, partition key), ``Timestamp`` (ISO-8601 string,
sort key), optional ``Data1`` (string or number), ``Data2`` and ``Data3`` (numbers); other
fields are kept as they are.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import orjson

from consumer.pipeline.keys import declare_keys
from consumer.pipeline.records import (
    MAX_ITEM_BYTES,
    MAX_NUMBER,
    MIN_NUMBER,
    ExactNumber,
    attribute,
    attribute_name,
    is_number,
    item_size,
)
from kernel.errors import InvalidRecord
from kernel.handlers import Item

KEY_NAMES = ("hardwareID", "Timestamp")  # what to_item declares: checked against the table
_NUMBERS = frozenset({"Data2", "Data3"})  # must be numbers
_TYPED = {  # optional fields with a type, and the complaint when it is wrong
    "Data1": "Data1 must be a string or a number",
    "Data2": "Data2 must be a number",
    "Data3": "Data3 must be a number",
}
# Items this large might pass 400 KB once encoded; smaller ones cannot, so skip the sizing.
_SIZE_CHECK_FROM = MAX_ITEM_BYTES // 2


# A number with 15 or more significant digits may not survive a float (orjson also turns
# integers beyond 64 bits into floats): such records are parsed again, keeping the literals.
# Found with one C-speed pass: digits and dots become "0", everything else a space, then a
# run of 15 is looked for (a regex costs more than the whole JSON parse on digit-heavy data).
_DIGITS_AND_DOTS = bytes(0x30 if chr(b) in "0123456789." else 0x20 for b in range(256))
_LONG_RUN = b"0" * 15


def has_long_number(data: bytes) -> bool:
    return _LONG_RUN in data.translate(_DIGITS_AND_DOTS)


def decode_object(data: bytes) -> dict[str, Any]:
    """JSON bytes -> dict, with a precise reason when that is impossible."""
    if not data:
        raise InvalidRecord("empty_record")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRecord("invalid_utf8", str(exc)) from None
        raise InvalidRecord("not_json", str(exc)) from None
    if not isinstance(value, dict):
        raise InvalidRecord("not_object", f"JSON {type(value).__name__}, expected an object")
    if has_long_number(data):
        exact: dict[str, Any] = json.loads(data, parse_float=ExactNumber, parse_int=ExactNumber)
        return exact
    return value


def _required_string(record: dict[str, Any], name: str) -> str:
    value = record.get(name)
    if value is None:
        raise InvalidRecord("missing_field", name)
    if not isinstance(value, str):
        raise InvalidRecord("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidRecord("empty_field", name)
    return value


@declare_keys(*KEY_NAMES)
def to_item(data: bytes) -> Item:
    record = decode_object(data)
    _required_string(record, "hardwareID")
    timestamp = _required_string(record, "Timestamp")
    try:
        datetime.fromisoformat(timestamp)
    except ValueError:
        raise InvalidRecord(
            "bad_timestamp", f"Timestamp {timestamp[:64]!r} is not ISO-8601"
        ) from None
    if "" in record:
        raise InvalidRecord("bad_attribute_name", "attribute name of 0 characters")
    # The per-record hot path: strings and plain floats inline, anything else the long way.
    item: Item = {}
    for name, value in record.items():
        kind = type(value)
        if kind is str:
            if name in _NUMBERS:
                raise InvalidRecord("wrong_type", f"{name} must be a number")
            item[name] = {"S": value}
        elif kind is float and (value == 0 or MIN_NUMBER <= abs(value) < MAX_NUMBER):
            item[name] = {"N": repr(value)}
        else:
            if name in _TYPED and value is not None and not is_number(value):
                raise InvalidRecord("wrong_type", _TYPED[name])
            item[attribute_name(name)] = attribute(value)
    if len(data) >= _SIZE_CHECK_FROM and (size := item_size(item)) > MAX_ITEM_BYTES:
        raise InvalidRecord("item_too_large", f"{size} bytes > 400 KB")
    return item
