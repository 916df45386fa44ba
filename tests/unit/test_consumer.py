"""``convert``: records -> items and dead letters, nothing dropped."""

from __future__ import annotations

import pytest

from consumer.pipeline.records import InvalidRecord, Item
from consumer.pipeline.telemax import to_item
from consumer.shard.consumer import convert, dead_letter
from consumer.testing import kinesis_record, reading

STREAM = "telemax-stream"
SHARD = "shardId-000000000003"


def test_good_and_bad_records_are_split_in_order() -> None:
    records = [
        kinesis_record(reading("HW-1"), 1, "pk-1"),
        kinesis_record(b"{not json", 2, "pk-2"),
        kinesis_record(reading("HW-3"), 3, "pk-3"),
        kinesis_record(reading("HW-4", timestamp="later"), 4),
        kinesis_record(reading("HW-5"), 5),
    ]
    items, dead, origins = convert(records, to_item, STREAM, SHARD)
    assert [i["hardwareID"]["S"] for i in items] == ["HW-1", "HW-3", "HW-5"]
    assert [o is r for o, r in zip(origins, [records[0], records[2], records[4]], strict=True)] == [
        True,
        True,
        True,
    ]
    assert [(d.sequence_number, d.reason) for d in dead] == [
        (records[1]["SequenceNumber"], "not_json"),
        (records[3]["SequenceNumber"], "bad_timestamp"),
    ]
    letter = dead[0]
    assert (letter.stream, letter.shard_id, letter.sub_sequence) == (STREAM, SHARD, 0)
    assert letter.data == b"{not json"
    assert letter.partition_key == "pk-2"
    assert letter.detail  # orjson's explanation is kept


def test_handler_exception_becomes_handler_error() -> None:
    def handler(data: bytes) -> Item:
        if data == b"boom":
            raise RuntimeError("kaput")
        if data == b"invalid":
            raise InvalidRecord("custom_reason", "told so")
        return {"k": {"S": data.decode()}}

    records = [
        kinesis_record(b"ok-1", 10),
        kinesis_record(b"boom", 11),
        kinesis_record(b"invalid", 12),
        kinesis_record(b"ok-2", 13),
    ]
    items, dead, origins = convert(records, handler, STREAM, SHARD)
    assert items == [{"k": {"S": "ok-1"}}, {"k": {"S": "ok-2"}}]
    assert [o["SequenceNumber"] for o in origins] == [f"{10:056d}", f"{13:056d}"]
    assert [(d.reason, d.detail, d.data) for d in dead] == [
        ("handler_error", f"RuntimeError: kaput (at {__file__}:45)", b"boom"),
        ("custom_reason", "told so", b"invalid"),
    ]


def test_empty_batch() -> None:
    assert convert([], to_item, STREAM, SHARD) == ([], [], [])


def test_base_exceptions_are_not_swallowed() -> None:
    def handler(data: bytes) -> Item:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert([kinesis_record(b"x", 1)], handler, STREAM, SHARD)


def test_dead_letter_without_partition_key() -> None:
    record = {"Data": b"x", "SequenceNumber": "42"}
    letter = dead_letter(STREAM, SHARD, record, "not_json", "detail")
    assert letter.partition_key == ""
    assert (letter.sequence_number, letter.reason, letter.detail) == ("42", "not_json", "detail")
