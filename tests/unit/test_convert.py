"""``convert``: records -> items and dead letters, nothing dropped; KPL aggregates opened."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumer.pipeline.convert import Converted, convert, dead_letter
from consumer.pipeline.records import InvalidRecord, Item
from consumer.pipeline.telemax import to_item
from consumer.testing import kinesis_record, reading
from producer.kpl import aggregate
from producer.shipper import Entry

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
    converted = convert(records, to_item, STREAM, SHARD)
    items, dead, origins = converted.items, converted.dead, converted.origins
    assert [i["hardwareID"]["S"] for i in items] == ["HW-1", "HW-3", "HW-5"]
    assert [
        o == (r, 0) for o, r in zip(origins, [records[0], records[2], records[4]], strict=True)
    ] == [
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
    converted = convert(records, handler, STREAM, SHARD)
    items, dead, origins = converted.items, converted.dead, converted.origins
    assert items == [{"k": {"S": "ok-1"}}, {"k": {"S": "ok-2"}}]
    assert [o["SequenceNumber"] for o, _ in origins] == [f"{10:056d}", f"{13:056d}"]
    assert [(d.reason, d.data) for d in dead] == [
        ("handler_error", b"boom"),
        ("custom_reason", b"invalid"),
    ]
    source = Path(__file__).read_text().splitlines()
    raising_line = next(n for n, line in enumerate(source, 1) if '("kaput")' in line)
    assert dead[0].detail == f"RuntimeError: kaput (at {__file__}:{raising_line})"
    assert dead[1].detail == "told so"


def test_empty_batch() -> None:
    assert convert([], to_item, STREAM, SHARD) == Converted([], [], [], 0)


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


def aggregated(*readings_: dict[str, object]) -> bytes:
    entries = [Entry(orjson.dumps(r), str(r["hardwareID"])) for r in readings_]
    (packed,) = aggregate(entries)
    return packed.data


def test_aggregated_records_become_one_item_per_user_record() -> None:
    records = [
        kinesis_record(reading("HW-0"), 1),
        kinesis_record(aggregated(reading("HW-1"), reading("HW-2"), reading("HW-3")), 2),
    ]
    converted = convert(records, to_item, STREAM, SHARD)
    assert [i["hardwareID"]["S"] for i in converted.items] == ["HW-0", "HW-1", "HW-2", "HW-3"]
    assert [(o["SequenceNumber"][-1:], sub) for o, sub in converted.origins] == [
        ("1", 0),
        ("2", 0),
        ("2", 1),
        ("2", 2),
    ]
    assert converted.last_sub == 2, "a checkpoint after this batch covers every user record"


def test_bad_user_record_inside_an_aggregate_keeps_its_sub_sequence() -> None:
    data = aggregated(reading("HW-1"), {"hardwareID": "HW-2", "Timestamp": "never"})
    converted = convert([kinesis_record(data, 7)], to_item, STREAM, SHARD)
    assert [i["hardwareID"]["S"] for i in converted.items] == ["HW-1"]
    (letter,) = converted.dead
    assert (letter.reason, letter.sub_sequence) == ("bad_timestamp", 1)
    assert orjson.loads(letter.data)["hardwareID"] == "HW-2", "the user record, not the aggregate"


def test_a_corrupt_aggregate_is_dead_lettered_whole() -> None:
    data = bytearray(aggregated(reading("HW-1"), reading("HW-2")))
    data[-1] ^= 0xFF  # break the MD5
    converted = convert([kinesis_record(bytes(data), 9)], to_item, STREAM, SHARD)
    assert converted.items == []
    (letter,) = converted.dead
    assert (letter.reason, letter.sub_sequence, letter.data) == ("kpl_checksum", 0, bytes(data))


@pytest.mark.parametrize(("done", "expected"), [(-1, 4), (0, 3), (2, 1), (3, 0)])
def test_resuming_inside_an_aggregate_skips_the_user_records_done(done: int, expected: int) -> None:
    record = kinesis_record(aggregated(*(reading(f"HW-{n}") for n in range(4))), 5)
    later = kinesis_record(reading("HW-9"), 6)
    resume = (record["SequenceNumber"], done)
    converted = convert([record, later], to_item, STREAM, SHARD, resume_after=resume)
    ids = [i["hardwareID"]["S"] for i in converted.items]
    assert ids == [f"HW-{n}" for n in range(4 - expected, 4)] + ["HW-9"]
