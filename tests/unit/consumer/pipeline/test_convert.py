"""``convert``: records -> items and dead letters, nothing dropped; KPL aggregates opened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import structlog

from consumer.feeds import telemax
from consumer.feeds.telemax import to_item
from consumer.metrics import Metrics
from consumer.pipeline.convert import Converted, Converter, convert, dead_letter
from consumer.pipeline.keys import declare_keys
from consumer.testing import kinesis_record, reading
from kernel.errors import InvalidRecord
from kernel.handlers import Handler, Item, with_encoder
from kernel.kpl.decode import MAX_HASH_KEY
from kernel.kpl.encode import Entry, aggregate
from kernel.logs import get as get_logger
from tests.unit.kernel.test_kpl import HALF, aggregate_with_hash_keys, md5_key

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


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        pytest.param(5, [6], id="plain-record-at-the-checkpoint-done"),
        pytest.param(4, [4, 6], id="checkpoint-record-trimmed-away"),
    ],
)
def test_resuming_at_a_plain_record_skips_it(first: int, expected: list[int]) -> None:
    """The reader reads *at* the checkpoint: the plain record there was done (its only user
    record has sub-sequence 0); when it is gone (trimmed), nothing is skipped."""
    records = [kinesis_record(reading(f"HW-{n}"), n) for n in (first, 6)]
    converted = convert(records, to_item, STREAM, SHARD, resume_after=(f"{5:056d}", 0))
    assert [i["hardwareID"]["S"] for i in converted.items] == [f"HW-{n}" for n in expected]
    assert converted.last_sub == 0


def test_only_the_first_record_can_be_the_checkpoint() -> None:
    record = kinesis_record(reading("HW-5"), 5)
    converted = convert(
        [kinesis_record(reading("HW-6"), 6), record],
        to_item,
        STREAM,
        SHARD,
        resume_after=(record["SequenceNumber"], 0),
    )
    assert len(converted.items) == 2


# -- the shard's hash range: KPL user records routed elsewhere are dropped and counted --------

FIRST = (0, HALF - 1)  # the hash ranges of a two-shard stream
SECOND = (HALF, MAX_HASH_KEY)


def user(
    name: str, hash_key: int | str | None = None, key: str = "pk"
) -> tuple[bytes, str, str | None]:
    """A user record whose data is a reading of hardware ``name``."""
    data = orjson.dumps(reading(name))
    return data, key, None if hash_key is None else str(hash_key)


def names(converted: Converted) -> list[str]:
    return [i["hardwareID"]["S"] for i in converted.items]


# partition keys on either side of the middle of the hash space
LOW_KEY = next(k for k in (f"k{n}" for n in range(100)) if md5_key(k) < HALF)
HIGH_KEY = next(k for k in (f"k{n}" for n in range(100)) if md5_key(k) >= HALF)


@pytest.mark.parametrize(
    ("users", "hash_range", "kept", "outside"),
    [
        pytest.param([user("A", 0), user("B", HALF)], None, ["A", "B"], 0, id="no-range"),
        pytest.param(
            [user("A", 0), user("B", HALF)], FIRST, ["A"], 1, id="mixed-keeps-those-inside"
        ),
        pytest.param([user("A", 0), user("B", HALF)], SECOND, ["B"], 1, id="second-shard"),
        pytest.param(
            [user("A", HALF - 1), user("B", HALF), user("C", MAX_HASH_KEY), user("D", 0)],
            FIRST,
            ["A", "D"],
            2,
            id="boundaries-first",
        ),
        pytest.param(
            [user("A", HALF - 1), user("B", HALF), user("C", MAX_HASH_KEY), user("D", 0)],
            SECOND,
            ["B", "C"],
            2,
            id="boundaries-second",
        ),
        pytest.param(
            [user("A", key=LOW_KEY), user("B", key=HIGH_KEY)],
            FIRST,
            ["A", "B"],
            0,
            id="partition-key-hash-without-explicit-kept",
        ),
        pytest.param(
            [user("A", HALF, key=LOW_KEY), user("B", 0, key=HIGH_KEY)],
            FIRST,
            ["B"],
            1,
            id="explicit-wins-over-partition-key",
        ),
        pytest.param([user("A", HALF), user("B", HALF)], FIRST, [], 2, id="all-outside"),
        pytest.param([user("A", "undefined")], FIRST, ["A"], 0, id="unplaceable-kept"),
        pytest.param([user("A", 5), user("B", 7)], (5, 5), ["A"], 1, id="range-of-one"),
        pytest.param([user("A", 0), user("B", 1)], (0, MAX_HASH_KEY), ["A", "B"], 0, id="whole"),
    ],
)
def test_user_records_outside_the_hash_range_are_dropped_and_counted(
    users: list[tuple[bytes, str, str | None]],
    hash_range: tuple[int, int] | None,
    kept: list[str],
    outside: int,
) -> None:
    record = kinesis_record(aggregate_with_hash_keys(users), 3)
    converted = convert([record], to_item, STREAM, SHARD, hash_range=hash_range)
    assert names(converted) == kept
    assert converted.dead == []
    assert converted.outside_range == outside
    positions = [n for n, u in enumerate(users) if orjson.loads(u[0])["hardwareID"] in kept]
    assert [sub for _, sub in converted.origins] == positions, "sub-sequence numbers kept"
    assert converted.last_sub == len(users) - 1, "a checkpoint covers the dropped ones too"


@pytest.mark.parametrize("hash_range", [FIRST, SECOND, (5, 5)])
def test_plain_records_are_never_filtered(hash_range: tuple[int, int]) -> None:
    records = [
        kinesis_record(reading(f"HW-{n}"), n, key) for n, key in enumerate((LOW_KEY, HIGH_KEY))
    ]
    converted = convert(records, to_item, STREAM, SHARD, hash_range=hash_range)
    assert names(converted) == ["HW-0", "HW-1"]
    assert converted.outside_range == 0


def test_a_bad_user_record_outside_the_range_is_dropped_not_dead_lettered() -> None:
    users = [user("A", 0), (b"{not json", "pk", str(HALF)), (b"{bad", "pk", "1")]
    record = kinesis_record(aggregate_with_hash_keys(users), 4)
    converted = convert([record], to_item, STREAM, SHARD, hash_range=FIRST)
    assert names(converted) == ["A"]
    assert [(d.reason, d.sub_sequence) for d in converted.dead] == [("not_json", 2)]
    assert converted.outside_range == 1


@pytest.mark.parametrize(
    ("done", "kept", "outside"), [(-1, ["A", "C"], 2), (1, ["C"], 1), (3, [], 0)]
)
def test_user_records_done_before_are_not_counted_again(
    done: int, kept: list[str], outside: int
) -> None:
    users = [user("A", 0), user("B", HALF), user("C", 1), user("D", HALF)]
    record = kinesis_record(aggregate_with_hash_keys(users), 5)
    resume = (record["SequenceNumber"], done)
    converted = convert([record], to_item, STREAM, SHARD, resume_after=resume, hash_range=FIRST)
    assert (names(converted), converted.outside_range) == (kept, outside)


def test_counts_add_up_over_a_batch() -> None:
    records = [
        kinesis_record(aggregate_with_hash_keys([user("A", 0), user("B", HALF)]), 1),
        kinesis_record(reading("P"), 2, HIGH_KEY),
        kinesis_record(aggregate_with_hash_keys([user("C", HALF), user("D", HALF + 1)]), 3),
        kinesis_record(b"{nope", 4),
    ]
    converted = convert(records, to_item, STREAM, SHARD, hash_range=FIRST)
    assert names(converted) == ["A", "P"]
    assert [d.sequence_number[-1] for d in converted.dead] == ["4"]
    assert converted.outside_range == 3
    assert converted.last_sub == 0


# -- a handler that raises: the batch again after pauses, then dead letters -------------------


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("failures", "items", "dead", "errors", "waited"),
    [
        pytest.param(0, 2, 0, 0, 0.0, id="never"),
        pytest.param(2, 2, 0, 4, 0.6, id="twice-then-well"),
        pytest.param(99, 0, 2, 8, 2.6, id="always"),
    ],
)
async def test_a_raising_handler_gets_the_batch_again_then_dead_letters(
    failures: int, items: int, dead: int, errors: int, waited: float
) -> None:
    calls = {"n": 0}

    def flaky(data: bytes) -> Item:
        calls["n"] += 1
        if calls["n"] <= 2 * failures:  # two records per attempt
            raise RuntimeError("a dependency is down")
        return to_item(data)

    metrics = Metrics(STREAM)
    counter = metrics.handler_errors.labels(STREAM)
    records = [kinesis_record(reading(f"HW-{n}"), n) for n in (1, 2)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with structlog.testing.capture_logs() as logged:
        converted = await Converter(flaky, STREAM, SHARD).retrying(records, get_logger(), counter)
    assert (len(converted.items), len(converted.dead)) == (items, dead)
    assert all(letter.reason == "handler_error" for letter in converted.dead)
    assert (
        metrics.registry.get_sample_value("telemax_handler_errors_total", {"stream": STREAM})
        == errors
    )
    assert loop.time() - started == pytest.approx(waited)
    assert [e["event"] for e in logged if e["log_level"] == "error"] == (
        ["handler_failed"] if dead else []
    )


def encoding_one_by_one() -> Handler:
    """``to_item`` with its encoder and no batch encoder: convert encodes record by record."""

    @with_encoder(telemax.encode)
    @declare_keys(*telemax.KEY_NAMES)
    def handler(data: bytes) -> Item:
        return to_item(data)

    return handler


ENCODING = [pytest.param(to_item, id="batch"), pytest.param(encoding_one_by_one(), id="single")]


@pytest.mark.parametrize("handler", ENCODING)
@pytest.mark.parametrize("resume", [False, True])
def test_a_batch_the_encoder_takes_whole_stands_for_the_handlers_items(
    handler: Handler, resume: bool
) -> None:
    """Every record canonical (the common batch, taken whole): the same items, origins and
    bytes as the handler alone, the resumed record skipped as there."""
    records = [kinesis_record(reading(f"HW-{n}"), n) for n in range(1, 40)]
    keys = ("hardwareID", "Timestamp")
    resume_after = (records[0]["SequenceNumber"], 0) if resume else None
    encoded = convert(records, handler, STREAM, SHARD, keys, resume_after)
    alone = convert(records, lambda data: to_item(data), STREAM, SHARD, keys, resume_after)
    assert all(type(e) is tuple for e in encoded.entries)
    assert len(encoded.entries) == 39 - resume
    assert encoded.items == alone.items
    assert (encoded.dead, encoded.origins, encoded.data) == (alone.dead, alone.origins, alone.data)
    assert (encoded.last_sub, encoded.outside_range) == (alone.last_sub, alone.outside_range)


@pytest.mark.parametrize("handler", ENCODING)
def test_records_the_handler_encodes_are_entries_that_stand_for_its_items(
    handler: Handler,
) -> None:
    """With the table's key, ``to_item``'s encoder writes the canonical readings as they
    will be stored; a batch of every kind — canonical (spaced too), reordered, a KPL
    aggregate, refused — gives the same items, dead letters, origins and bytes as the
    handler alone."""
    reordered = orjson.dumps(dict(reversed(reading("HW-2").items())))
    records = [
        kinesis_record(orjson.dumps(reading("HW-1")).replace(b",", b" ,\n "), 1),
        kinesis_record(reordered, 2),
        kinesis_record(b"{not json", 3),
        kinesis_record(aggregated(*(reading(f"HW-A{n}") for n in range(3))), 4),
        kinesis_record(reading("HW-5", timestamp="later"), 5),
        kinesis_record(reading("HW-6"), 6),
    ]
    keys = ("hardwareID", "Timestamp")
    encoded = convert(records, handler, STREAM, SHARD, keys)
    alone = convert(records, lambda data: to_item(data), STREAM, SHARD, keys)  # no encoder

    assert [type(e) is tuple for e in encoded.entries] == [True, False, True, True, True, True]
    assert all(type(e) is dict for e in alone.entries)
    assert encoded.items == alone.items == alone.entries
    assert encoded.dead == alone.dead
    assert encoded.origins == alone.origins
    assert encoded.data == alone.data
    assert [e[0] for e in encoded.entries if type(e) is tuple] == [
        (item["hardwareID"]["S"], item["Timestamp"]["S"])
        for item, e in zip(alone.items, encoded.entries, strict=True)
        if type(e) is tuple
    ]


def test_a_handler_keyed_otherwise_than_the_table_is_not_encoded() -> None:
    """The encoder's key is the handler's: for a table keyed otherwise (or not told) every
    record goes through the handler."""
    records = [kinesis_record(reading("HW-1"), 1)]
    for keys in ((), ("hardwareID",), ("Timestamp", "hardwareID")):
        converted = convert(records, to_item, STREAM, SHARD, keys)
        assert all(type(e) is dict for e in converted.entries), keys
