"""KPL-style aggregation: many small user records packed into one Kinesis record.

The wire format is in :mod:`kernel.kpl`; the KCL and :func:`kernel.kpl.decode.deaggregate`
unpack it. The size of every field is known before it is written, so an aggregate never
overshoots its limit. :class:`Entry` is a record to put, plain or aggregated.

Like the KPL without a shard map, an aggregate goes to the shard of its first record's
partition key; every user record keeps its own key inside.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator

from kernel.kpl import DIGEST_BYTES, MAGIC, MAX_RECORD_BYTES

DEFAULT_AGGREGATE_BYTES = 51_200  # the KPL's AggregationMaxSize default
_OVERHEAD = len(MAGIC) + DIGEST_BYTES


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    data: bytes
    partition_key: str
    records: int = 1  # user records inside: more than one once KPL-aggregated
    # Handed back untouched when Kinesis acknowledges the entry (tail: the line it carries).
    context: object = dataclasses.field(default=None, compare=False)

    @property
    def size(self) -> int:
        return len(self.data) + len(self.partition_key.encode())


# Field keys: (field number << 3) | wire type.
_PARTITION_KEY_TABLE = bytes([1 << 3 | 2])
_RECORDS = bytes([3 << 3 | 2])
_PARTITION_KEY_INDEX = bytes([1 << 3 | 0])
_DATA = bytes([3 << 3 | 2])


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(key: bytes, payload: bytes) -> bytes:
    return key + varint(len(payload)) + payload


def _record_message(key_index: int, data: bytes) -> bytes:
    return _PARTITION_KEY_INDEX + varint(key_index) + _length_delimited(_DATA, data)


class Aggregator:
    """Collects entries; hands out finished aggregates no larger than ``max_bytes``
    (data plus partition key, as Kinesis counts a record)."""

    def __init__(self, max_bytes: int = DEFAULT_AGGREGATE_BYTES) -> None:
        if not 0 < max_bytes <= MAX_RECORD_BYTES:
            raise ValueError(f"aggregate size must be 1-{MAX_RECORD_BYTES} bytes")
        self.max_bytes = max_bytes
        self._reset()

    def _reset(self) -> None:
        self._keys: dict[str, int] = {}
        # Encoded fields. The key table is written before the records, as a protobuf encoder
        # would (parsers accept any order, but canonical output is easier to compare).
        self._key_fields: list[bytes] = []
        self._record_fields: list[bytes] = []
        self._first: Entry | None = None
        self._count = 0
        self._size = _OVERHEAD  # bytes of the aggregate so far, plus the first key

    def _cost(self, entry: Entry) -> tuple[bytes | None, bytes]:
        """Encoded new key-table field (if the key is new) and record field for ``entry``."""
        index = self._keys.get(entry.partition_key)
        new_key = None
        if index is None:
            index = len(self._keys)
            new_key = _length_delimited(_PARTITION_KEY_TABLE, entry.partition_key.encode())
        return new_key, _length_delimited(_RECORDS, _record_message(index, entry.data))

    def add(self, entry: Entry) -> list[Entry]:
        """Add ``entry``; returns the records that are complete because of it (0, 1 or 2)."""
        new_key, record = self._cost(entry)
        first_key_bytes = 0 if self._count else len(entry.partition_key.encode())
        growth = len(record) + len(new_key or b"") + first_key_bytes
        done: list[Entry] = []
        if self._count and self._size + growth > self.max_bytes:
            done.extend(self.flush())
            new_key, record = self._cost(entry)
            growth = len(record) + len(new_key or b"") + len(entry.partition_key.encode())
        if _OVERHEAD + growth > self.max_bytes:
            done.append(entry)  # too big to aggregate at all: goes as a plain record
            return done
        if self._first is None:
            self._first = entry
        if new_key is not None:
            self._keys[entry.partition_key] = len(self._keys)
            self._key_fields.append(new_key)
        self._record_fields.append(record)
        self._count += entry.records
        self._size += growth
        return done

    def flush(self) -> list[Entry]:
        """The aggregate built so far (if any), and start a new one."""
        first, count = self._first, self._count
        if first is None:
            return []
        if count == 1:  # as the KPL does: one record alone travels plain, readable by anyone
            self._reset()
            return [first]
        message = b"".join(self._key_fields) + b"".join(self._record_fields)
        data = MAGIC + message + hashlib.md5(message).digest()
        self._reset()
        return [Entry(data, first.partition_key, records=count)]


def aggregate(
    entries: Iterable[Entry], max_bytes: int = DEFAULT_AGGREGATE_BYTES
) -> Iterator[Entry]:
    """Pack ``entries`` into as few Kinesis records as ``max_bytes`` allows, in order."""
    aggregator = Aggregator(max_bytes)
    for entry in entries:
        yield from aggregator.add(entry)
    yield from aggregator.flush()
