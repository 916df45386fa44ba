"""Dead-letter items: key layout, ordering, truncation (DESIGN §5)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from consumer.pipeline.deadletter import (
    KEY_NAMES,
    MAX_DETAIL,
    MAX_STORED_DATA,
    DeadLetter,
    position_key,
)
from consumer.pipeline.records import MAX_ITEM_BYTES, item_size

SEEN = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
SEQ = "49590338271490256608559692538361571095921575989136588898"
LETTER = DeadLetter(
    stream="telemax-stream",
    shard_id="shardId-000000000001",
    sequence_number=SEQ,
    sub_sequence=2,
    reason="not_json",
    detail="unexpected character",
    data=b"{oops",
    partition_key="HW-1",
)


def test_to_item_exact() -> None:
    assert LETTER.to_item(SEEN) == {
        "shardId": {"S": "shardId-000000000001"},
        "position": {"S": "00000000" + SEQ + ":000002"},
        "stream": {"S": "telemax-stream"},
        "sequenceNumber": {"S": SEQ},
        "subSequenceNumber": {"N": "2"},
        "reason": {"S": "not_json"},
        "detail": {"S": "unexpected character"},
        "dataSize": {"N": "5"},
        "seenAt": {"S": "2026-01-02T03:04:05.678Z"},
        "partitionKey": {"S": "HW-1"},
        "data": {"B": b"{oops"},
    }
    assert set(KEY_NAMES) <= set(LETTER.to_item(SEEN))


def test_seen_at_defaults_to_now_in_utc() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    seen = LETTER.to_item()["seenAt"]["S"]
    assert seen.endswith("Z")
    parsed = datetime.fromisoformat(seen)
    assert before <= parsed <= datetime.now(UTC)


def test_same_letter_same_key() -> None:
    first = LETTER.to_item(SEEN)
    again = LETTER.to_item(datetime(2030, 1, 1, tzinfo=UTC))
    assert [first[k] for k in KEY_NAMES] == [again[k] for k in KEY_NAMES]


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        pytest.param(("9", 0), ("10", 0), id="shorter-number-first"),
        pytest.param(("99", 5), ("100", 0), id="sequence-before-sub"),
        pytest.param((SEQ, 1), (SEQ, 2), id="sub-sequence"),
        pytest.param((SEQ, 9), (SEQ, 10), id="sub-sequence-padded"),
        pytest.param(("9" * 55, 0), ("1" + "0" * 55, 0), id="55-vs-56-digits"),
    ],
)
def test_position_keys_sort_in_stream_order(
    lower: tuple[str, int], higher: tuple[str, int]
) -> None:
    low, high = position_key(*lower), position_key(*higher)
    assert low < high


def test_position_key_format() -> None:
    assert position_key("123", 7) == "0" * 61 + "123:000007"
    assert LETTER.position == position_key(SEQ, 2)


@pytest.mark.parametrize(
    ("size", "stored", "truncated"),
    [
        pytest.param(1, 1, False, id="tiny"),
        pytest.param(MAX_STORED_DATA, MAX_STORED_DATA, False, id="exactly-limit"),
        pytest.param(MAX_STORED_DATA + 1, MAX_STORED_DATA, True, id="one-over"),
        pytest.param(1024 * 1024, MAX_STORED_DATA, True, id="max-kinesis-record"),
    ],
)
def test_data_truncation(size: int, stored: int, truncated: bool) -> None:
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    item = dataclasses.replace(LETTER, data=data).to_item(SEEN)
    assert item["data"]["B"] == data[:stored]
    assert item["dataSize"] == {"N": str(size)}
    assert ("dataTruncated" in item) is truncated
    if truncated:
        assert item["dataTruncated"] == {"BOOL": True}
    assert item_size(item) <= MAX_ITEM_BYTES


def test_empty_data_has_no_binary_attribute() -> None:
    item = dataclasses.replace(LETTER, data=b"").to_item(SEEN)
    assert "data" not in item
    assert "dataTruncated" not in item
    assert item["dataSize"] == {"N": "0"}


def test_empty_partition_key_is_left_out() -> None:
    assert "partitionKey" not in dataclasses.replace(LETTER, partition_key="").to_item(SEEN)


@pytest.mark.parametrize(
    ("detail", "stored"),
    [
        pytest.param("", "-", id="empty-becomes-dash"),
        pytest.param("x" * MAX_DETAIL, "x" * MAX_DETAIL, id="at-limit"),
        pytest.param("y" * (MAX_DETAIL + 50), "y" * MAX_DETAIL, id="truncated"),
    ],
)
def test_detail(detail: str, stored: str) -> None:
    assert dataclasses.replace(LETTER, detail=detail).to_item(SEEN)["detail"] == {"S": stored}
