"""The default record handler: a TELEMAX reading as JSON -> a TELEMAX item.

Schema: ``hardwareID`` (non-empty string, partition key), ``Timestamp`` (ISO-8601 string,
sort key), optional ``Data1`` (string or number), ``Data2`` and ``Data3`` (numbers); other
fields are kept as they are.
"""

from __future__ import annotations

from datetime import datetime

from consumer.feeds.fields import decode_object, fits, required_string
from consumer.pipeline.keys import declare_keys
from consumer.pipeline.records import (
    MAX_NUMBER,
    MIN_NUMBER,
    attribute,
    attribute_name,
    is_number,
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


@declare_keys(*KEY_NAMES)
def to_item(data: bytes) -> Item:
    record = decode_object(data)
    required_string(record, "hardwareID")
    timestamp = required_string(record, "Timestamp")
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
    return fits(item, data)
