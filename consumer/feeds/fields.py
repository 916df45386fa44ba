"""What every feed's validation needs: JSON bytes -> an object, and the checks of one field,
each failing with an :class:`~kernel.errors.InvalidRecord` whose reason is stable (a metric
label and the dead letter's ``reason``) and whose detail names the field and the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from consumer.pipeline.records import (
    MAX_ITEM_BYTES,
    ExactNumber,
    attribute,
    attribute_name,
    is_number,
    item_size,
)
from kernel.errors import InvalidRecord
from kernel.handlers import Item

# A number with 15 or more significant digits may not survive a float (orjson also turns
# integers beyond 64 bits into floats): such records are parsed again, keeping the literals.
# Found with one C-speed pass: digits and dots become "0", everything else a space, then a
# run of 15 is looked for (a regex costs more than the whole JSON parse on digit-heavy data).
_DIGITS_AND_DOTS = bytes(0x30 if chr(b) in "0123456789." else 0x20 for b in range(256))
_LONG_RUN = b"0" * 15
_SHOWN = 64  # characters of a bad value quoted in a dead letter's detail


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


def shown(value: Any) -> str:
    text = repr(value.text if isinstance(value, ExactNumber) else value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def required(record: Mapping[str, Any], name: str) -> Any:
    value = record.get(name)
    if value is None:
        raise InvalidRecord("missing_field", name)
    return value


def required_string(record: Mapping[str, Any], name: str) -> str:
    value = required(record, name)
    if not isinstance(value, str):
        raise InvalidRecord("wrong_type", f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidRecord("empty_field", name)
    return value


def required_time(record: Mapping[str, Any], name: str) -> datetime:
    """An ISO-8601 time; one without a zone is taken as UTC, so any two compare."""
    text = required_string(record, name)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecord("bad_timestamp", f"{name} {shown(text)} is not ISO-8601") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def decimal(value: Any) -> Decimal:
    """A JSON number, exactly as written: a float's shortest repr is the literal it came from
    (orjson keeps literals of up to 17 significant digits round-trip exact)."""
    if isinstance(value, ExactNumber):
        try:
            return Decimal(value.text)
        except InvalidOperation:  # pragma: no cover - the JSON parser gave a number literal
            raise InvalidRecord("wrong_type", f"{value.text!r} is not a number") from None
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def number(record: Mapping[str, Any], name: str, *, optional: bool = False) -> Decimal | None:
    """The field as an exact decimal; None when optional and absent (or JSON null)."""
    value = record.get(name)
    if value is None:
        if optional:
            return None
        raise InvalidRecord("missing_field", name)
    if not is_number(value):
        raise InvalidRecord("wrong_type", f"{name} must be a number, got {shown(value)}")
    return decimal(value)


def integer(value: Any, name: str) -> int:
    if isinstance(value, ExactNumber):
        try:
            return int(value.text)
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidRecord("wrong_type", f"{name} must be an integer, got {shown(value)}")


# Items this large might pass 400 KB once encoded; smaller ones cannot, so skip the sizing.
SIZE_CHECK_FROM = MAX_ITEM_BYTES // 2


def fits(item: Item, data: bytes) -> Item:
    """``item`` (made of ``data``), unless DynamoDB would refuse it for its size."""
    if len(data) >= SIZE_CHECK_FROM and (size := item_size(item)) > MAX_ITEM_BYTES:
        raise InvalidRecord("item_too_large", f"{size} bytes > 400 KB")
    return item


def item_of(record: Mapping[str, Any], data: bytes) -> Item:
    """A validated record (decoded from ``data``) as an item: every field kept, each as its
    DynamoDB attribute."""
    item = {attribute_name(name): attribute(value) for name, value in record.items()}
    return fits(item, data)
