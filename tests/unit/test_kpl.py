"""KPL aggregation: our aggregator and our de-aggregator agree with each other and with
records built by the reference implementation, and damaged records are refused."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from consumer.pipeline.kpl import MAGIC, UserRecord, deaggregate, is_aggregated
from consumer.pipeline.records import InvalidRecord
from producer.kpl import DEFAULT_AGGREGATE_BYTES, Aggregator, aggregate, varint
from producer.shipper import MAX_RECORD_BYTES, Entry

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
    ],
)
def test_malformed_protobuf_is_refused(message: bytes, detail: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        deaggregate(wrap(message))
    assert caught.value.reason == "kpl_malformed"
    assert detail in caught.value.detail


def test_unknown_fields_tags_and_hash_keys_are_skipped() -> None:
    tag = field(4, 2, field(1, 2, b"env") + field(2, 2, b"prod"))
    message = (
        KEY_A
        + field(2, 2, b"12345")  # explicit hash key table
        + field(9, 5, b"\x00\x00\x00\x00")  # a future fixed32 field
        + record(0, b"payload", field(2, 0, b"\x00"), tag, field(8, 1, b"\x00" * 8))
    )
    assert deaggregate(wrap(message)) == [UserRecord(b"payload", "a", 0)]


def test_an_aggregate_without_records_is_empty() -> None:
    assert deaggregate(wrap(KEY_A)) == []
