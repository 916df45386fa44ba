"""KPL de-aggregation: one Kinesis record in, the user records the producer packed into it out.

The wire format is in :mod:`kernel.kpl`.

Data without the magic prefix is an ordinary record and comes back unchanged as the single
user record with sub-sequence 0, so a stream may mix aggregated and plain producers. Data that
claims to be aggregated but is not well formed raises :class:`InvalidRecord` (``kpl_checksum``
or ``kpl_malformed``) so the worker dead-letters it instead of storing garbage.

Hash range (the KCL's duplicate filter). After a reshard, the KPL may put an aggregate into
a shard whose hash range does not hold some of its user records; it sends those again to the
right shard, so the copies read here are duplicates. :func:`in_hash_range` tells the user
records to drop: those whose *explicit hash key* lies outside the shard's range (bounds
inclusive, as in amazon-kinesis-client's ``AggregatorUtil``). Two deliberate differences from
the KCL, both so that nothing is lost: the KCL also places a user record without an explicit
hash key by the MD5 of its partition key, and drops the *whole* aggregate when one user record
is outside. Aggregators that pack records of every shard into one aggregate without explicit
hash keys (awslabs' kinesis-aggregation, many hand-made ones) would lose data under the first
rule; since KPL 0.15.11 (its #576) a user record that landed in another shard *whose range
holds it* counts as delivered and is not sent again, so the second rule would lose it too.
At worst we keep a duplicate, and items are keyed writes.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from kernel.errors import InvalidRecord
from kernel.kpl import DIGEST_BYTES, MAGIC

MAX_HASH_KEY = 2**128 - 1  # the hash key space of a stream is [0, 2**128 - 1]
# An explicit hash key as the KCL parses it (java.math.BigInteger): decimal, optional sign.
_DECIMAL = re.compile(r"[+-]?[0-9]+")

# Protobuf wire types.
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


@dataclasses.dataclass(frozen=True, slots=True)
class UserRecord:
    data: bytes
    partition_key: str
    sub_sequence: int  # position inside the aggregated record (KCL's subSequenceNumber)
    explicit_hash_key: str | None = None  # as the producer wrote it (decimal text), if any


def effective_hash_key(user: UserRecord) -> int | None:
    """The hash key that routes ``user``: its explicit hash key if it has one, else the MD5 of
    its partition key (UTF-8) as an unsigned big-endian 128-bit integer, as Kinesis and the KCL
    compute it. None when the explicit hash key is not a decimal integer."""
    if user.explicit_hash_key is None:
        digest = hashlib.md5(user.partition_key.encode("utf-8")).digest()
        return int.from_bytes(digest, "big")
    if _DECIMAL.fullmatch(user.explicit_hash_key) is None:
        return None
    return int(user.explicit_hash_key)


def in_hash_range(user: UserRecord, hash_range: tuple[int, int]) -> bool:
    """Whether ``user`` may belong to a shard of hash range ``(start, end)``, both inclusive.
    Only an explicit hash key proves a user record routed elsewhere: one without (placed by
    its aggregate's partition key) or with one that is not a number is kept."""
    if user.explicit_hash_key is None:
        return True
    key = effective_hash_key(user)
    return key is None or hash_range[0] <= key <= hash_range[1]


def is_aggregated(data: bytes) -> bool:
    return data.startswith(MAGIC)


def deaggregate(data: bytes, partition_key: str = "") -> list[UserRecord]:
    """The user records inside ``data``; ``partition_key`` is the Kinesis record's own key,
    used for data that is not aggregated."""
    if not is_aggregated(data):
        return [UserRecord(data, partition_key, 0)]
    if len(data) < len(MAGIC) + DIGEST_BYTES:
        raise InvalidRecord("kpl_malformed", f"aggregated record of only {len(data)} bytes")
    message = data[len(MAGIC) : -DIGEST_BYTES]
    if hashlib.md5(message).digest() != data[-DIGEST_BYTES:]:
        raise InvalidRecord("kpl_checksum", "MD5 of the aggregated record does not match")
    try:
        return _decode_aggregated(message)
    except _Malformed as exc:
        raise InvalidRecord("kpl_malformed", str(exc)) from None


class _Malformed(Exception):
    pass


class _Reader:
    """A cursor over protobuf bytes; every read is bounds-checked."""

    def __init__(self, buffer: bytes | memoryview) -> None:
        self.buffer = memoryview(buffer)
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.buffer)

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.buffer):
                raise _Malformed("truncated varint")
            byte = self.buffer[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift >= 64:
                raise _Malformed("varint longer than 10 bytes")

    def take(self, length: int) -> memoryview:
        if length > len(self.buffer) - self.pos:
            raise _Malformed(f"field of {length} bytes runs past the end of the message")
        chunk = self.buffer[self.pos : self.pos + length]
        self.pos += length
        return chunk

    def field(self) -> tuple[int, int]:
        key = self.varint()
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise _Malformed("field number 0")
        return number, wire_type

    def skip(self, wire_type: int) -> None:
        """Skip a field we do not use: newer producers may add fields."""
        if wire_type == VARINT:
            self.varint()
        elif wire_type == FIXED64:
            self.take(8)
        elif wire_type == LENGTH_DELIMITED:
            self.take(self.varint())
        elif wire_type == FIXED32:
            self.take(4)
        else:
            raise _Malformed(f"unsupported wire type {wire_type}")


def _text(chunk: memoryview, what: str) -> str:
    try:
        return str(chunk, "utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} is not UTF-8") from None


def _expect(wire_type: int, wanted: int, what: str) -> None:
    if wire_type != wanted:
        raise _Malformed(f"{what} has wire type {wire_type}, expected {wanted}")


def _decode_aggregated(message: bytes) -> list[UserRecord]:
    keys: list[str] = []
    hash_keys: list[str] = []
    raw_records: list[memoryview] = []
    reader = _Reader(message)
    while not reader.at_end():
        number, wire_type = reader.field()
        if number == 1:
            _expect(wire_type, LENGTH_DELIMITED, "partition_key_table")
            keys.append(_text(reader.take(reader.varint()), "a partition key"))
        elif number == 2:
            _expect(wire_type, LENGTH_DELIMITED, "explicit_hash_key_table")
            hash_keys.append(_text(reader.take(reader.varint()), "an explicit hash key"))
        elif number == 3:
            _expect(wire_type, LENGTH_DELIMITED, "records")
            raw_records.append(reader.take(reader.varint()))
        else:
            reader.skip(wire_type)
    return [_decode_record(raw, keys, hash_keys, n) for n, raw in enumerate(raw_records)]


def _decode_record(
    raw: memoryview, keys: list[str], hash_keys: list[str], sub_sequence: int
) -> UserRecord:
    key_index: int | None = None
    hash_key_index: int | None = None
    data: bytes | None = None
    reader = _Reader(raw)
    while not reader.at_end():
        number, wire_type = reader.field()
        if number == 1:
            _expect(wire_type, VARINT, "partition_key_index")
            key_index = reader.varint()
        elif number == 2:
            _expect(wire_type, VARINT, "explicit_hash_key_index")
            hash_key_index = reader.varint()
        elif number == 3:
            _expect(wire_type, LENGTH_DELIMITED, "data")
            data = bytes(reader.take(reader.varint()))
        else:  # 4 = tags
            reader.skip(wire_type)
    if key_index is None or data is None:
        missing = "partition_key_index" if key_index is None else "data"
        raise _Malformed(f"record {sub_sequence} has no {missing}")
    if key_index >= len(keys):
        raise _Malformed(f"record {sub_sequence} names partition key {key_index} of {len(keys)}")
    hash_key = None
    if hash_key_index is not None:
        if hash_key_index >= len(hash_keys):
            raise _Malformed(
                f"record {sub_sequence} names explicit hash key {hash_key_index}"
                f" of {len(hash_keys)}"
            )
        hash_key = hash_keys[hash_key_index]
    return UserRecord(data, keys[key_index], sub_sequence, hash_key)
