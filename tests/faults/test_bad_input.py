"""Bad input on kinesalite + dynalite: every record that can never be an item is dead-lettered
with its reason, counted, and passed by the checkpoint; the good ones are stored."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson
import pytest

from devkit.local import metrics_text, sample
from kernel.kpl.encode import Entry, aggregate
from tests.support import Stack, keys_of, readings, wait_until

pytestmark = pytest.mark.timeout(120)

TS = "2026-01-01T00:00:00Z"


def corrupt_aggregate() -> bytes:
    entries = [Entry(orjson.dumps({"hardwareID": f"k{n}", "Timestamp": TS}), "k") for n in (1, 2)]
    (packed,) = aggregate(entries)
    return packed.data[:-1] + bytes([packed.data[-1] ^ 0xFF])  # the MD5 no longer matches


BAD: list[tuple[bytes, str]] = [
    (b"", "empty_record"),
    (b"\xff\xfe{}", "invalid_utf8"),
    (b"not json", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'{"Timestamp": "%s"}' % TS.encode(), "missing_field"),
    (b'{"hardwareID": "", "Timestamp": "%s"}' % TS.encode(), "empty_field"),
    (b'{"hardwareID": "h", "Timestamp": ""}', "empty_field"),
    (b'{"hardwareID": 7, "Timestamp": "%s"}' % TS.encode(), "wrong_type"),
    (b'{"hardwareID": "h", "Timestamp": "%s", "Data2": "fast"}' % TS.encode(), "wrong_type"),
    (b'{"hardwareID": "h", "Timestamp": "yesterday"}', "bad_timestamp"),
    (
        b'{"hardwareID": "h", "Timestamp": "%s", "Data2": 1e200}' % TS.encode(),
        "number_out_of_range",
    ),
    (b'{"hardwareID": "h", "Timestamp": "%s", "": 1}' % TS.encode(), "bad_attribute_name"),
    (
        orjson.dumps({"hardwareID": "h", "Timestamp": TS, "blob": "x" * 450_000}),
        "item_too_large",
    ),
    # Valid JSON and schema, but 39 significant digits: only DynamoDB can say no.
    (
        b'{"hardwareID": "h2", "Timestamp": "%s", "Data2": 123456789012345678901234567890123456789}'
        % TS.encode(),
        "rejected_by_dynamodb",
    ),
    (corrupt_aggregate(), "kpl_checksum"),
]


def put_in_order(stack: Stack, payloads: list[bytes]) -> None:
    shard = stack.kinesis.list_shards(StreamName=stack.stream)["Shards"][0]["ShardId"]
    for payload in payloads:  # one by one: large records, and a known order
        stack.kinesis.put_record(
            StreamName=stack.stream, Data=payload, PartitionKey="k", ExplicitHashKey="0"
        )
    assert shard


def test_each_kind_of_bad_record_is_dead_lettered_with_its_reason(faulty: Any) -> None:
    stack: Stack = faulty.stack
    stack.setup(shards=1)
    good = readings(30)
    exact = {"hardwareID": "big", "Timestamp": TS, "Data2": 123456789012345678901234567890}
    dup_old = {"hardwareID": "dup", "Timestamp": TS, "Data1": "old"}
    dup_new = {"hardwareID": "dup", "Timestamp": TS, "Data1": "new"}
    payloads = [orjson.dumps(r) for r in good[:15]]
    payloads += [data for data, _ in BAD]
    payloads += [json.dumps(r).encode() for r in (exact, dup_old, dup_new, *good[15:])]
    put_in_order(stack, payloads)

    worker = faulty.worker()
    wait_until(
        lambda: stack.count(stack.dlq_table) >= len(BAD) and stack.count() >= 32,
        60,
        "good records stored and bad ones dead-lettered",
    )
    letters = stack.scan(stack.dlq_table)
    assert Counter(i["reason"]["S"] for i in letters) == Counter(r for _, r in BAD)
    for letter in letters:
        assert letter["sequenceNumber"]["S"].isdigit() and letter["shardId"]["S"]
        assert letter["detail"]["S"] and letter["seenAt"]["S"].endswith("Z")
    # Each bad record is there with its own reason, its bytes and its size.
    found = {
        (letter.get("data", {}).get("B", b""), letter["reason"]["S"], int(letter["dataSize"]["N"]))
        for letter in letters
    }
    for data, reason in BAD:
        stored_prefix = data[: 300 * 1024]
        assert (stored_prefix, reason, len(data)) in found, reason
    (big,) = [x for x in letters if x["reason"]["S"] == "item_too_large"]
    assert big["dataTruncated"] == {"BOOL": True}

    stored = {(i["hardwareID"]["S"], i["Timestamp"]["S"]): i for i in stack.scan()}
    expected = {(r["hardwareID"], r["Timestamp"]) for r in good} | {("big", TS), ("dup", TS)}
    assert set(stored) == expected
    assert stored[("big", TS)]["Data2"] == {"N": "123456789012345678901234567890"}
    assert stored[("dup", TS)]["Data1"] == {"S": "new"}, "the later of two same-key records wins"

    text = metrics_text(worker.metrics_port)
    for reason, count in Counter(r for _, r in BAD).items():
        assert sample(text, "telemax_records_dead_lettered_total", reason=reason) == count
    assert worker.stop() == 0
    (lease,) = stack.leases().values()
    last = stack.kinesis.get_records(
        ShardIterator=stack.kinesis.get_shard_iterator(
            StreamName=stack.stream,
            ShardId=lease["leaseKey"]["S"],
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=lease["checkpoint"]["S"],
        )["ShardIterator"]
    )["Records"]
    assert len(last) == 1, "the checkpoint is the shard's last record: past every bad one"


def test_a_raising_handler_is_retried_and_only_the_failing_record_is_dead_lettered(
    faulty: Any,
) -> None:
    stack: Stack = faulty.stack
    stack.setup(shards=1)
    batch = readings(20)
    batch[5]["Data1"] = "transient"  # fails twice, then works
    batch[12]["Data1"] = "bug"  # always raises
    stack.put(batch)
    worker = faulty.worker(TELEMAX_HANDLER="tests.handlers:flaky")
    wait_until(lambda: stack.count(stack.dlq_table) >= 1 and stack.count() >= 19, 30, "done")

    (letter,) = stack.scan(stack.dlq_table)
    assert letter["reason"]["S"] == "handler_error"
    assert "ZeroDivisionError" in letter["detail"]["S"] and "handlers.py" in letter["detail"]["S"]
    assert orjson.loads(letter["data"]["B"])["Timestamp"] == batch[12]["Timestamp"]
    expected = {(r["hardwareID"], r["Timestamp"]) for i, r in enumerate(batch) if i != 12}
    assert keys_of(stack.scan()) == expected, "the transient failure was retried, not dropped"
    text = metrics_text(worker.metrics_port)
    assert sample(text, "telemax_handler_errors_total") >= 3
    assert worker.stop() == 0
    assert any('"event":"handler_failed"' in line for line in worker.log_lines()), (
        "the bug is logged as an error"
    )
