"""The default record handler: a TELEMAX reading as JSON -> a TELEMAX item.

Schema: ``hardwareID`` (non-empty string, partition key), ``Timestamp`` (ISO-8601 string,
sort key), optional ``Data1`` (string or number), ``Data2`` and ``Data3`` (numbers); other
fields are kept as they are.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import orjson

from consumer.pipeline.records import (
    MAX_ITEM_BYTES,
    ExactNumber,
    InvalidRecord,
    Item,
    attribute,
    attribute_name,
    is_number,
    item_size,
)

KEY_NAMES = ("hardwareID", "Timestamp")
# Items this large might pass 400 KB once encoded; smaller ones cannot, so skip the sizing.
_SIZE_CHECK_FROM = MAX_ITEM_BYTES // 2


# A number with 15 or more significant digits may not survive a float (orjson also turns
# integers beyond 64 bits into floats): such records are parsed again, keeping the literals.
_LONG_NUMBER = re.compile(rb"\d[\d.]{14,}")


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
    if _LONG_NUMBER.search(data):
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
    data1 = record.get("Data1")
    if data1 is not None and not (isinstance(data1, str) or is_number(data1)):
        raise InvalidRecord("wrong_type", "Data1 must be a string or a number")
    for name in ("Data2", "Data3"):
        value = record.get(name)
        if value is not None and not is_number(value):
            raise InvalidRecord("wrong_type", f"{name} must be a number")
    item = {attribute_name(name): attribute(value) for name, value in record.items()}
    if len(data) >= _SIZE_CHECK_FROM and (size := item_size(item)) > MAX_ITEM_BYTES:
        raise InvalidRecord("item_too_large", f"{size} bytes > 400 KB")
    return item
