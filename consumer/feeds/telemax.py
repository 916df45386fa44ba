"""The default record handler: a TELEMAX reading as JSON -> a TELEMAX item.

Schema: ``hardwareID`` (non-empty string, partition key), ``Timestamp`` (ISO-8601 string,
sort key), optional ``Data1`` (string or number), ``Data2`` and ``Data3`` (numbers); other
fields are kept as they are.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

from consumer.feeds.fields import SIZE_CHECK_FROM, decode_object, fits, required_string
from consumer.pipeline.keys import declare_keys
from consumer.pipeline.records import (
    MAX_NUMBER,
    MIN_NUMBER,
    attribute,
    attribute_name,
    is_number,
)
from kernel.errors import InvalidRecord
from kernel.handlers import Encoded, Item, with_encoder

KEY_NAMES = ("hardwareID", "Timestamp")  # what to_item declares: checked against the table
_NUMBERS = frozenset({"Data2", "Data3"})  # must be numbers
_TYPED = {  # optional fields with a type, and the complaint when it is wrong
    "Data1": "Data1 must be a string or a number",
    "Data2": "Data2 must be a number",
    "Data3": "Data3 must be a number",
}


# Three ways, each giving the item the next would give (a test holds them equal on records of
# every shape, each written compact, spaced and reordered): the canonical reading matched on
# its bytes; the usual reading once parsed; any record by the general rules. In process
# (10,000 of the producer's readings, best of 7): to_item cost 5.4-5.9 µs a reading by the
# general rules alone, 4.0-4.1 with the usual reading, 3.2 with the canonical one.

_WS = rb"[ \t\r\n]*+"  # JSON's whitespace
_TEXT = rb'"([^"\\\x00-\x1f]*+)"'  # a string without escapes (control characters: not JSON)
_DEVICE = rb'"([^"\\\x00-\x1f]++)"'  # the same, not empty (an empty hardwareID is refused)
# a number without exponent, kept as written: the general rules' number is the same one
# (a float's shortest repr of up to 14 digits; the literal itself from 15 on: has_long_number)
# — but not "-0", which the general rules write as 0 (DynamoDB is not asked to read it)
_NUMBER = rb"(?!-0(?!\.))(-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+)"


_FIELD_PATTERNS = (
    (b"hardwareID", _DEVICE),
    (b"Timestamp", _TEXT),
    (b"Data1", _TEXT),
    (b"Data2", _NUMBER),
    (b"Data3", _NUMBER),
)


def _reading_pattern(ws: bytes) -> bytes:
    """The canonical reading's fields in order, with ``ws`` between every token."""
    fields = (
        rb'"' + name + rb'"' + ws + rb":" + ws + value + ws for name, value in _FIELD_PATTERNS
    )
    return rb"\{" + ws + (rb"," + ws).join(fields) + rb"\}"


def _each_of_joined_pattern(reading: bytes) -> re.Pattern[bytes]:
    """Over a batch joined by NUL: one match a record, the groups filled where ``reading``
    matches it."""
    return re.compile(rb"(?:" + reading + rb"|[^\x00]*+)\x00")


_CANONICAL_PATTERN = _reading_pattern(_WS)
_CANONICAL = re.compile(_CANONICAL_PATTERN).fullmatch
# The canonical reading written compact, as most writers write it (no whitespace): the same
# groups as the canonical pattern's on such a reading.
_COMPACT_PATTERN = _reading_pattern(b"")
# A batch joined by NUL (which no canonical reading holds): each record, canonical or not,
# ends one match, and only a compact canonical one fills the groups (its hardwareID is not
# empty); the others are matched again one by one (:func:`encode`). One match of the compact
# pattern over a batch costs 0.60-0.64 µs a reading against the canonical pattern's
# 0.73-0.96, whitespace allowed between every token (950 of the producer's readings).
_EACH_COMPACT_OF_JOINED = _each_of_joined_pattern(_COMPACT_PATTERN).findall
# ... and with the canonical pattern, for a batch of readings written otherwise (spaced, as
# Python's json.dumps writes them): one whose first reading is not compact, or with more
# readings left than this share, is matched at once rather than record by record (950
# spaced readings: 1.29 µs a reading before the compact pattern, 1.87 with every one left
# matched again alone, 1.28 now)
_COMPACT = re.compile(_COMPACT_PATTERN).fullmatch
_EACH_OF_JOINED = _each_of_joined_pattern(_CANONICAL_PATTERN).findall
ONE_BY_ONE_SHARE = 1 / 16


def _canonical_parts(data: bytes) -> tuple[bytes, ...] | None:
    """A reading written as most writers write it — the five fields in the schema's order,
    strings without escapes, numbers without exponent —: its five values as written, read
    from its bytes without a parse. None for anything else."""
    found = _CANONICAL(data)
    return None if found is None else found.groups()


def _canonical_item(data: bytes) -> Item | None:
    """The canonical reading's item (the numbers as written: DynamoDB keeps a number, not its
    text). None for anything else."""
    parts = _canonical_parts(data)
    if parts is None:
        return None
    hardware, stamp, link, two, three = parts
    try:
        timestamp = stamp.decode()
        datetime.fromisoformat(timestamp)
        return _reading(hardware.decode(), timestamp, link.decode(), two.decode(), three.decode())
    except ValueError:  # not UTF-8 (UnicodeDecodeError), not a time: the general rules say
        return None


_ENCODED = (
    b'{"hardwareID":{"S":"%s"},"Timestamp":{"S":"%s"},"Data1":{"S":"%s"},'
    b'"Data2":{"N":"%s"},"Data3":{"N":"%s"}}'
)
_FIELDS = (("hardwareID", "S"), ("Timestamp", "S"), ("Data1", "S"), ("Data2", "N"), ("Data3", "N"))


def encode(data: bytes) -> Encoded | None:
    """The canonical reading in ASCII (valid UTF-8 without a decode) as the JSON of the item
    :func:`to_item` makes of it — its values go in as written: a string without escapes or
    control characters is the same string in JSON —, keyed by (hardwareID, Timestamp). None
    for anything else (non-ASCII text too: to_item decodes and judges it)."""
    if len(data) >= SIZE_CHECK_FROM or not data.isascii():
        return None  # (fits: a large record's size is to_item's to check)
    parts = _canonical_parts(data)
    return None if parts is None else _encoded(parts)


def _encoded(parts: tuple[bytes, ...]) -> Encoded | None:
    """The entry of a canonical reading's values (None when its time is not one)."""
    timestamp = parts[1].decode()
    try:
        datetime.fromisoformat(timestamp)
    except ValueError:
        return None
    return (parts[0].decode(), timestamp), _ENCODED % parts, parts, _FIELDS


def encode_batch(datas: Sequence[bytes]) -> list[Encoded | None]:
    """:func:`encode` of each record, with one match over the batch joined instead of a call,
    a match and its groups a record (10,000 readings in process, the encoding alone: 1.78 ->
    1.45 µs a reading), and the entries made by C loops when every record matched.
    A batch that is not all ASCII, holds a large record or a NUL goes one by one."""
    joined = b"\x00".join(datas) + b"\x00"
    if (
        not joined.isascii()
        or max(map(len, datas), default=0) >= SIZE_CHECK_FROM
        or joined.count(b"\x00") != len(datas)
    ):
        return [encode(data) for data in datas]
    if datas and _COMPACT(datas[0]) is None:
        return _entries(_EACH_OF_JOINED(joined))
    found = _entries(_EACH_COMPACT_OF_JOINED(joined))
    left = found.count(None)  # not compact, or not canonical (to_item decides)
    if left > len(found) * ONE_BY_ONE_SHARE:
        return _entries(_EACH_OF_JOINED(joined))
    if left:
        for index, entry in enumerate(found):
            if entry is None:
                found[index] = encode(datas[index])
    return found


_DEVICE_OF, _STAMP_OF = itemgetter(0), itemgetter(1)


def _entries(matched: list[tuple[bytes, ...]]) -> list[Encoded | None]:
    """The entries of a batch's matches, in order (a match with empty groups: not canonical,
    None). When every record matched and every time is one, without a Python call a
    reading: ``map`` and ``zip`` over the matches (10,000 of the producer's readings in
    process, the encoding: 1.40-1.60 -> 1.32 µs a reading); else each on its own."""
    devices = list(map(_DEVICE_OF, matched))
    if b"" not in devices:
        stamps = list(map(bytes.decode, map(_STAMP_OF, matched)))
        try:
            deque(map(datetime.fromisoformat, stamps), maxlen=0)
        except ValueError:
            pass  # a time that is not one: each judged below
        else:
            keys = zip(map(bytes.decode, devices), stamps, strict=True)
            return list(zip(keys, map(_ENCODED.__mod__, matched), matched, repeat(_FIELDS)))
    return [_encoded(parts) if parts[0] else None for parts in matched]


@with_encoder(encode, encode_batch)
@declare_keys(*KEY_NAMES)
def to_item(data: bytes) -> Item:
    item = _canonical_item(data)
    if item is not None:
        return fits(item, data)
    record = decode_object(data)
    item = _usual_item(record)
    return fits(_item_of(record) if item is None else item, data)


# The strings a reading repeats (its device, its link) as shared attribute values: two fewer
# dicts an item (0.55 µs in process). Items are never changed once made — the pipeline sends,
# archives and reads them as they are — so sharing a value is safe. Cleared when full: a
# fleet with more devices than this pays a dict insert instead of an allocation.
_SHARED_LIMIT = 4096
_shared: dict[str, dict[str, str]] = {}


def _reading(hardware: str, stamp: str, link: str, two: str, three: str) -> Item:
    shared = _shared
    device, line = shared.get(hardware), shared.get(link)
    if device is None or line is None:
        if len(shared) >= _SHARED_LIMIT:
            shared.clear()
        device = shared.setdefault(hardware, {"S": hardware})
        line = shared.setdefault(link, {"S": link})
    return {
        "hardwareID": device,
        "Timestamp": {"S": stamp},
        "Data1": line,
        "Data2": {"N": two},
        "Data3": {"N": three},
    }


def _usual_item(record: dict[str, Any]) -> Item | None:
    """The usual reading — exactly the five fields, the three strings (the device's not
    empty), the two measures floats within DynamoDB's range, a valid time —; None for
    anything else, which :func:`_item_of` reads by the full rules (and explains when it
    refuses)."""
    if len(record) != 5:
        return None
    try:
        hardware, stamp = record["hardwareID"], record["Timestamp"]
        link, two, three = record["Data1"], record["Data2"], record["Data3"]
    except KeyError:
        return None
    if not (
        type(hardware) is str
        and type(stamp) is str
        and type(link) is str
        and type(two) is float
        and type(three) is float
        and hardware
        and MIN_NUMBER <= abs(two) < MAX_NUMBER
        and MIN_NUMBER <= abs(three) < MAX_NUMBER
    ):
        return None
    try:
        datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return _reading(hardware, stamp, link, repr(two), repr(three))


def _item_of(record: dict[str, Any]) -> Item:
    """Any record, by the schema's rules (the module's docstring)."""
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
    # strings and plain floats inline, anything else the long way
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
    return item
