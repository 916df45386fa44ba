"""KPL aggregation: our aggregator and our de-aggregator agree with each other and with
records built by the reference implementation, and damaged records are refused."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from kernel.errors import InvalidRecord
from kernel.kpl import MAGIC, MAX_RECORD_BYTES
from kernel.kpl.decode import (
    MAX_HASH_KEY,
    UserRecord,
    deaggregate,
    effective_hash_key,
    in_hash_range,
    is_aggregated,
)
from kernel.kpl.encode import (
    DEFAULT_AGGREGATE_BYTES,
    Aggregator,
    Entry,
    aggregate,
    varint,
)

# Aggregated records captured from the reference implementations (awslabs kinesis-aggregation
# and the KPL), so the accepted format is not defined only by our own encoder.
REFERENCE_THREE_KEYS = (
    "84mawgoEcGstMAoEcGstMQoEcGstMhoTCAAaD3sibXNnIjoibGluZTAifRoTCAEaD3sibXNnIjoibGluZTEifR"
    "oTCAIaD3sibXNnIjoibGluZTIifZ8hyadI+v2KZPZrUGim6cQ="
)
REFERENCE_ONE_KEY = (
    "84mawgoCcDEaGAgAGhQwMTIzNDU2Nzg5MDEyMzQ1NjdfQRoYCAAaFDAxMjM0NTY3ODkwMTIzNDU2N19CGhgIAB"
    "oUMDEyMzQ1Njc4OTAxMjM0NTY3X0NHjL02iyRk3D+kO2UC2X6u"
)


def wrap(message: bytes) -> bytes:
    """A protobuf message framed as the KPL frames it, with a correct checksum."""
    return MAGIC + message + hashlib.md5(message).digest()


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = varint(number << 3 | wire_type)
    return key + (varint(len(payload)) + payload if wire_type == 2 else payload)


def record(key_index: int, data: bytes, *extra: bytes) -> bytes:
    return field(3, 2, field(1, 0, varint(key_index)) + field(3, 2, data) + b"".join(extra))


def test_reference_record_with_three_keys() -> None:
    records = deaggregate(base64.b64decode(REFERENCE_THREE_KEYS), "outer")
    assert records == [
        UserRecord(b'{"msg":"line0"}', "pk-0", 0),
        UserRecord(b'{"msg":"line1"}', "pk-1", 1),
        UserRecord(b'{"msg":"line2"}', "pk-2", 2),
    ]


def test_reference_record_with_one_shared_key() -> None:
    records = deaggregate(base64.b64decode(REFERENCE_ONE_KEY))
    assert [(r.data, r.partition_key, r.sub_sequence) for r in records] == [
        (b"012345678901234567_A", "p1", 0),
        (b"012345678901234567_B", "p1", 1),
        (b"012345678901234567_C", "p1", 2),
    ]


def test_our_encoding_of_the_reference_records_is_byte_identical() -> None:
    entries = [Entry(b'{"msg":"line%d"}' % n, f"pk-{n}") for n in range(3)]
    (aggregated,) = aggregate(entries)
    assert aggregated.data == base64.b64decode(REFERENCE_THREE_KEYS)
    assert aggregated.partition_key == "pk-0"
    assert aggregated.records == 3


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"hardwareID":"HW-1"}', id="json"),
        pytest.param(b"", id="empty"),
        pytest.param(MAGIC[:3], id="magic-prefix-only"),
        pytest.param(b"\xf3\x89", id="binary"),
    ],
)
def test_plain_data_passes_through(data: bytes) -> None:
    assert not is_aggregated(data)
    assert deaggregate(data, "pk") == [UserRecord(data, "pk", 0)]


def random_entries(rng: random.Random, count: int) -> list[Entry]:
    keys = [f"key-{n}-é" for n in range(rng.randrange(1, 20))]
    return [
        Entry(rng.randbytes(rng.choice((0, 1, 10, 200, 3000))), rng.choice(keys))
        for _ in range(count)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_round_trip_keeps_every_record_in_order(seed: int) -> None:
    rng = random.Random(seed)
    entries = random_entries(rng, rng.randrange(1, 400))
    max_bytes = rng.choice((1024, 8192, DEFAULT_AGGREGATE_BYTES))
    out = list(aggregate(entries, max_bytes))
    unpacked = [
        (user.data, user.partition_key)
        for kinesis_record in out
        for user in deaggregate(kinesis_record.data, kinesis_record.partition_key)
    ]
    assert unpacked == [(e.data, e.partition_key) for e in entries]
    assert sum(e.records for e in out) == len(entries)
    for kinesis_record in out:
        assert kinesis_record.size <= max_bytes or kinesis_record.records == 1


def test_aggregates_fill_up_to_the_limit_exactly() -> None:
    entries = [Entry(b"x" * 100, "k") for _ in range(2000)]
    out = list(aggregate(entries, 10_000))
    assert all(e.size <= 10_000 for e in out)
    assert all(e.size > 10_000 - 110 for e in out[:-1]), "each aggregate is as full as it can be"
    subs = [u.sub_sequence for u in deaggregate(out[0].data)]
    assert subs == list(range(out[0].records))


def test_a_lone_record_and_an_oversized_record_go_plain() -> None:
    small, big = Entry(b"small", "a"), Entry(b"b" * 5000, "b")
    assert list(aggregate([small])) == [small]
    out = list(aggregate([small, Entry(b"s2", "a"), big, Entry(b"s3", "c")], 2048))
    assert [is_aggregated(e.data) for e in out] == [True, False, False]
    assert out[1] == big
    assert out[2] == Entry(b"s3", "c")


def test_aggregator_refuses_impossible_limits() -> None:
    with pytest.raises(ValueError, match="aggregate size"):
        Aggregator(MAX_RECORD_BYTES + 1)


def test_flush_of_an_empty_aggregator_is_nothing() -> None:
    assert Aggregator().flush() == []


def test_corrupted_checksum_is_refused() -> None:
    (aggregated,) = aggregate([Entry(b"one", "a"), Entry(b"two", "b")])
    damaged = bytearray(aggregated.data)
    damaged[10] ^= 0x01
    with pytest.raises(InvalidRecord) as caught:
        deaggregate(bytes(damaged))
    assert caught.value.reason == "kpl_checksum"


@pytest.mark.parametrize("cut", [1, 16, 17, 30])
def test_truncated_record_is_refused(cut: int) -> None:
    (aggregated,) = aggregate([Entry(b"one" * 10, "a"), Entry(b"two" * 10, "b")])
    with pytest.raises(InvalidRecord) as caught:
        deaggregate(aggregated.data[:-cut])
    assert caught.value.reason in {"kpl_checksum", "kpl_malformed"}


def test_shorter_than_magic_and_digest_is_malformed() -> None:
    with pytest.raises(InvalidRecord) as caught:
        deaggregate(MAGIC + b"\x00" * 10)
    assert caught.value.reason == "kpl_malformed"


KEY_A = field(1, 2, b"a")


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        pytest.param(KEY_A + record(1, b"x"), "names partition key 1 of 1", id="key-index-range"),
        pytest.param(KEY_A + field(3, 2, field(1, 0, b"\x00")), "no data", id="missing-data"),
        pytest.param(KEY_A + field(3, 2, field(3, 2, b"x")), "no partition_key_index", id="no-key"),
        pytest.param(KEY_A + b"\x1a\x05\x08", "runs past the end", id="record-overruns"),
        pytest.param(KEY_A + b"\x1a", "truncated varint", id="truncated-length"),
        pytest.param(field(1, 2, b"\xff") + record(0, b"x"), "not UTF-8", id="bad-utf8-key"),
        pytest.param(field(1, 0, b"\x01"), "wire type 0", id="key-table-not-bytes"),
        pytest.param(KEY_A + b"\x1f", "wire type 7", id="unknown-wire-type"),
        pytest.param(b"\x00", "field number 0", id="field-zero"),
        pytest.param(KEY_A + b"\x28" + b"\xff" * 11, "longer than 10", id="endless-varint"),
        pytest.param(
            KEY_A + field(2, 0, b"\x01") + record(0, b"x"),
            "explicit_hash_key_table has wire type 0",
            id="hash-key-table-not-bytes",
        ),
        pytest.param(
            KEY_A + field(2, 2, b"\xff") + record(0, b"x"), "not UTF-8", id="bad-utf8-hash-key"
        ),
        pytest.param(
            KEY_A + field(2, 2, b"1") + record(0, b"x", field(2, 2, b"0")),
            "explicit_hash_key_index has wire type 2",
            id="hash-key-index-not-varint",
        ),
        pytest.param(
            KEY_A + record(0, b"x", field(2, 0, b"\x00")),
            "names explicit hash key 0 of 0",
            id="hash-key-index-without-table",
        ),
    ],
)
def test_malformed_protobuf_is_refused(message: bytes, detail: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        deaggregate(wrap(message))
    assert caught.value.reason == "kpl_malformed"
    assert detail in caught.value.detail


def test_unknown_fields_and_tags_are_skipped() -> None:
    tag = field(4, 2, field(1, 2, b"env") + field(2, 2, b"prod"))
    message = (
        KEY_A
        + field(2, 2, b"12345")  # explicit hash key table
        + field(9, 5, b"\x00\x00\x00\x00")  # a future fixed32 field
        + record(0, b"payload", field(2, 0, b"\x00"), tag, field(8, 1, b"\x00" * 8))
    )
    assert deaggregate(wrap(message)) == [UserRecord(b"payload", "a", 0, "12345")]


def test_an_aggregate_without_records_is_empty() -> None:
    assert deaggregate(wrap(KEY_A)) == []


# -- explicit hash keys and the shard's hash range (the KCL's duplicate filter) -------------

HALF = 2**127  # a two-shard stream: [0, HALF - 1] and [HALF, MAX_HASH_KEY]


def md5_key(partition_key: str) -> int:
    """Kinesis's hash of a partition key, computed independently of the code under test."""
    return int(hashlib.md5(partition_key.encode("utf-8")).hexdigest(), 16)


def aggregate_with_hash_keys(users: list[tuple[bytes, str, str | None]]) -> bytes:
    """An aggregated record of (data, partition key, explicit hash key or None) user records,
    with deduplicated key tables as the KPL writes them."""
    keys: list[str] = []
    hash_keys: list[str] = []
    records = b""
    for data, key, hash_key in users:
        if key not in keys:
            keys.append(key)
        extra = b""
        if hash_key is not None:
            if hash_key not in hash_keys:
                hash_keys.append(hash_key)
            extra = field(2, 0, varint(hash_keys.index(hash_key)))
        records += field(3, 2, field(1, 0, varint(keys.index(key))) + extra + field(3, 2, data))
    tables = b"".join(field(1, 2, k.encode()) for k in keys)
    tables += b"".join(field(2, 2, h.encode()) for h in hash_keys)
    return wrap(tables + records)


def test_deaggregate_keeps_each_user_records_explicit_hash_key() -> None:
    data = aggregate_with_hash_keys(
        [(b"0", "a", "7"), (b"1", "b", None), (b"2", "a", "5"), (b"3", "c", "7")]
    )
    assert deaggregate(data) == [
        UserRecord(b"0", "a", 0, "7"),
        UserRecord(b"1", "b", 1, None),
        UserRecord(b"2", "a", 2, "5"),
        UserRecord(b"3", "c", 3, "7"),
    ]


def test_an_explicit_hash_key_index_outside_the_table_is_malformed() -> None:
    message = KEY_A + field(2, 2, b"5") + record(0, b"x", field(2, 0, varint(1)))
    with pytest.raises(InvalidRecord) as caught:
        deaggregate(wrap(message))
    assert caught.value.reason == "kpl_malformed"
    assert "explicit hash key 1 of 1" in caught.value.detail


@pytest.mark.parametrize(
    ("partition_key", "explicit_hash_key", "expected"),
    [
        pytest.param("a", None, md5_key("a"), id="md5-of-partition-key"),
        pytest.param("clé-é", None, md5_key("clé-é"), id="md5-of-utf8-key"),
        pytest.param("", None, md5_key(""), id="empty-partition-key"),
        pytest.param("a", "0", 0, id="explicit-zero"),
        pytest.param("a", "12345", 12345, id="explicit-wins-over-partition-key"),
        pytest.param("a", str(MAX_HASH_KEY), MAX_HASH_KEY, id="explicit-max"),
        pytest.param("a", "+42", 42, id="explicit-signed"),
        pytest.param("a", "-1", -1, id="explicit-negative"),
        pytest.param("a", str(MAX_HASH_KEY + 1), MAX_HASH_KEY + 1, id="explicit-past-max"),
        pytest.param("a", "undefined", None, id="explicit-not-a-number"),
        pytest.param("a", "", None, id="explicit-empty"),
        pytest.param("a", " 12", None, id="explicit-with-space"),
        pytest.param("a", "1_000", None, id="explicit-with-underscore"),
        pytest.param("a", "١٢", None, id="explicit-non-ascii-digits"),
    ],
)
def test_effective_hash_key(
    partition_key: str, explicit_hash_key: str | None, expected: int
) -> None:
    user = UserRecord(b"x", partition_key, 0, explicit_hash_key)
    assert effective_hash_key(user) == expected


def test_the_md5_of_a_known_key_is_read_unsigned_big_endian() -> None:
    # MD5("a") = 0cc175b9c0f1b6a831c399e269772661: its top bit clear; MD5("d") has it set
    assert effective_hash_key(UserRecord(b"", "a", 0)) == 0x0CC175B9C0F1B6A831C399E269772661
    assert effective_hash_key(UserRecord(b"", "d", 0)) == 0x8277E0910D750195B448797616E091AD


H = md5_key("a")


@pytest.mark.parametrize(
    ("partition_key", "explicit_hash_key", "hash_range", "inside"),
    [
        pytest.param("a", None, (H, H), True, id="pk-range-of-one"),
        pytest.param("a", None, (H, MAX_HASH_KEY), True, id="pk-at-start"),
        pytest.param("a", None, (0, H), True, id="pk-at-end"),
        # Without an explicit hash key a user record is kept (not placed by its partition key):
        pytest.param("a", None, (H + 1, MAX_HASH_KEY), True, id="pk-just-below-kept"),
        pytest.param("a", None, (0, H - 1), True, id="pk-just-above-kept"),
        pytest.param("a", "0", (0, HALF - 1), True, id="ehk-zero-first-shard"),
        pytest.param("a", "0", (HALF, MAX_HASH_KEY), False, id="ehk-zero-second-shard"),
        pytest.param("a", str(HALF - 1), (0, HALF - 1), True, id="ehk-last-of-first"),
        pytest.param("a", str(HALF - 1), (HALF, MAX_HASH_KEY), False, id="ehk-last-of-first-2"),
        pytest.param("a", str(HALF), (HALF, MAX_HASH_KEY), True, id="ehk-first-of-second"),
        pytest.param("a", str(HALF), (0, HALF - 1), False, id="ehk-first-of-second-1"),
        pytest.param("a", str(MAX_HASH_KEY), (HALF, MAX_HASH_KEY), True, id="ehk-max"),
        pytest.param("a", str(MAX_HASH_KEY), (0, MAX_HASH_KEY - 1), False, id="ehk-max-excluded"),
        pytest.param("a", "-1", (0, MAX_HASH_KEY), False, id="ehk-negative"),
        pytest.param("a", str(MAX_HASH_KEY + 1), (0, MAX_HASH_KEY), False, id="ehk-past-max"),
        # an explicit hash key that is not a number cannot be placed: kept, not dropped
        pytest.param("a", "undefined", (H + 1, H + 1), True, id="ehk-not-a-number-kept"),
    ],
)
def test_in_hash_range_bounds_are_inclusive(
    partition_key: str, explicit_hash_key: str | None, hash_range: tuple[int, int], inside: bool
) -> None:
    user = UserRecord(b"x", partition_key, 0, explicit_hash_key)
    assert in_hash_range(user, hash_range) is inside
