"""The default record handler: TELEMAX reading JSON -> DynamoDB item (DESIGN §5)."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.feeds import telemax
from consumer.feeds.fields import decode_object
from consumer.feeds.telemax import KEY_NAMES, _usual_item, to_item
from consumer.pipeline.records import MAX_ITEM_BYTES, item_size
from consumer.testing import reading
from kernel.errors import InvalidRecord
from kernel.handlers import as_item


def encode(value: Any) -> bytes:
    return orjson.dumps(value)


def test_key_names() -> None:
    assert KEY_NAMES == ("hardwareID", "Timestamp")


def test_reading_becomes_exact_wire_item() -> None:
    assert to_item(encode(reading())) == {
        "hardwareID": {"S": "HW-000001"},
        "Timestamp": {"S": "2026-01-01T00:00:00.000001Z"},
        "Data1": {"S": "LNK-0001"},
        "Data2": {"N": "100.5"},
        "Data3": {"N": "12.25"},
    }


def test_extra_fields_and_nested_values_are_kept() -> None:
    record = reading(
        site="lagos-3",
        tags=["a", 1, 2.5, True, None, ["x"]],
        meta={"fw": "1.2", "up": False, "n": {"deep": [1.5, {"k": "v"}]}, "none": None},
        online=True,
        note=None,
        count=0,
    )
    item = to_item(encode(record))
    assert item == {
        "hardwareID": {"S": "HW-000001"},
        "Timestamp": {"S": "2026-01-01T00:00:00.000001Z"},
        "Data1": {"S": "LNK-0001"},
        "Data2": {"N": "100.5"},
        "Data3": {"N": "12.25"},
        "site": {"S": "lagos-3"},
        "tags": {
            "L": [
                {"S": "a"},
                {"N": "1"},
                {"N": "2.5"},
                {"BOOL": True},
                {"NULL": True},
                {"L": [{"S": "x"}]},
            ]
        },
        "meta": {
            "M": {
                "fw": {"S": "1.2"},
                "up": {"BOOL": False},
                "n": {"M": {"deep": {"L": [{"N": "1.5"}, {"M": {"k": {"S": "v"}}}]}}},
                "none": {"NULL": True},
            }
        },
        "online": {"BOOL": True},
        "note": {"NULL": True},
        "count": {"N": "0"},
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"Data1": 7}, {"Data1": {"N": "7"}}, id="data1-number"),
        pytest.param({"Data1": 7.5}, {"Data1": {"N": "7.5"}}, id="data1-float"),
        pytest.param({"Data1": ""}, {"Data1": {"S": ""}}, id="data1-empty-string"),
        pytest.param({"Data2": 100}, {"Data2": {"N": "100"}}, id="data2-int"),
        pytest.param({"Data2": -0.25}, {"Data2": {"N": "-0.25"}}, id="data2-negative"),
        pytest.param({"Data3": None}, {"Data3": {"NULL": True}}, id="data3-null-allowed"),
    ],
)
def test_data_field_types(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    item = to_item(encode(reading(**fields)))
    for name, value in expected.items():
        assert item[name] == value


def test_optional_data_fields_may_be_absent() -> None:
    data = encode({"hardwareID": "HW-9", "Timestamp": "2026-01-01T00:00:00Z"})
    assert to_item(data) == {
        "hardwareID": {"S": "HW-9"},
        "Timestamp": {"S": "2026-01-01T00:00:00Z"},
    }


def without(name: str) -> dict[str, Any]:
    record = reading()
    del record[name]
    return record


BAD: list[Any] = [
    pytest.param(b"", "empty_record", id="empty"),
    pytest.param(b"\xff\xfe\xfd", "invalid_utf8", id="binary"),
    pytest.param(b'{"hardwareID": "\xff"}', "invalid_utf8", id="bad-utf8-in-string"),
    pytest.param(b"{not json", "not_json", id="not-json"),
    pytest.param(b'{"hardwareID": "HW-1",}', "not_json", id="trailing-comma"),
    pytest.param(b"NaN", "not_json", id="nan"),
    pytest.param(b"[1, 2]", "not_object", id="array"),
    pytest.param(b'"HW-1"', "not_object", id="string"),
    pytest.param(b"42", "not_object", id="number"),
    pytest.param(b"null", "not_object", id="null"),
    pytest.param(encode(without("hardwareID")), "missing_field", id="no-hardware-id"),
    pytest.param(encode(without("Timestamp")), "missing_field", id="no-timestamp"),
    pytest.param(encode(reading(hardwareID=None)), "missing_field", id="null-hardware-id"),
    pytest.param(encode(reading(hardware_id="")), "empty_field", id="empty-hardware-id"),
    pytest.param(encode(reading(timestamp="")), "empty_field", id="empty-timestamp"),
    pytest.param(encode({**reading(), "hardwareID": 42}), "wrong_type", id="hardware-id-number"),
    pytest.param(encode({**reading(), "Timestamp": 1767225600}), "wrong_type", id="ts-number"),
    pytest.param(encode(reading(Data2="fast")), "wrong_type", id="data2-string"),
    pytest.param(encode(reading(Data2=True)), "wrong_type", id="data2-bool"),
    pytest.param(encode(reading(Data3=[1])), "wrong_type", id="data3-list"),
    pytest.param(encode(reading(Data1=True)), "wrong_type", id="data1-bool"),
    pytest.param(encode(reading(Data1={"a": 1})), "wrong_type", id="data1-map"),
    pytest.param(encode(reading(timestamp="yesterday")), "bad_timestamp", id="ts-words"),
    pytest.param(encode(reading(timestamp="2026-13-01T00:00:00Z")), "bad_timestamp", id="ts-m13"),
    pytest.param(
        encode(reading(blob="x" * (MAX_ITEM_BYTES + 1024))), "item_too_large", id="too-large"
    ),
    pytest.param(
        encode(reading(Data1="x" * (MAX_ITEM_BYTES + 1024))),
        "item_too_large",
        id="too-large-canonical",  # the five fields as the producer writes them
    ),
]


@pytest.mark.parametrize(("data", "reason"), BAD)
def test_bad_record_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        to_item(data)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        pytest.param(without("Timestamp"), "Timestamp", id="missing"),
        pytest.param(reading(hardware_id=""), "hardwareID", id="empty"),
        pytest.param(
            {**reading(), "hardwareID": 42}, "hardwareID must be a string, got int", id="t"
        ),
        pytest.param(reading(Data2="fast"), "Data2 must be a number", id="data2"),
        pytest.param(reading(timestamp="soon"), "Timestamp 'soon' is not ISO-8601", id="ts"),
    ],
)
def test_bad_record_detail(record: dict[str, Any], detail: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        to_item(encode(record))
    assert caught.value.detail == detail
    assert str(caught.value) == f"{caught.value.reason}: {detail}"


def test_bad_timestamp_detail_is_truncated() -> None:
    with pytest.raises(InvalidRecord) as caught:
        to_item(encode(reading(timestamp="z" * 5000)))
    assert caught.value.reason == "bad_timestamp"
    assert len(caught.value.detail) < 100


def test_too_large_detail_names_size() -> None:
    with pytest.raises(InvalidRecord) as caught:
        to_item(encode(reading(blob="x" * (MAX_ITEM_BYTES + 1024))))
    assert caught.value.detail.endswith("bytes > 400 KB")


def test_large_but_fitting_item_is_accepted() -> None:
    item = to_item(encode(reading(blob="x" * (300 * 1024))))
    assert len(item["blob"]["S"]) == 300 * 1024
    assert item_size(item) <= MAX_ITEM_BYTES


def test_multibyte_text_counts_in_bytes() -> None:
    # 140 K three-byte characters: ~410 KB once encoded, though only 140 K characters long.
    with pytest.raises(InvalidRecord) as caught:
        to_item(encode(reading(blob="€" * 140_000)))
    assert caught.value.reason == "item_too_large"


BASE = b'"hardwareID": "HW-1", "Timestamp": "2026-01-01T00:00:00Z"'


@pytest.mark.parametrize(
    ("fields", "name", "expected"),
    [
        pytest.param(
            b'"Data2": 123456789012345678901234567890',
            "Data2",
            {"N": "123456789012345678901234567890"},
            id="int-beyond-64-bits",
        ),
        pytest.param(
            b'"Data3": 0.12345678901234567890',
            "Data3",
            {"N": "0.12345678901234567890"},
            id="long-decimal",
        ),
        pytest.param(
            b'"x": [1, 2.5, 99999999999999999999]',
            "x",
            {"L": [{"N": "1"}, {"N": "2.5"}, {"N": "99999999999999999999"}]},
            id="nested-long-int",
        ),
        pytest.param(b'"Data2": 12.5', "Data2", {"N": "12.5"}, id="short-float-fast-path"),
    ],
)
def test_numbers_keep_every_digit(fields: bytes, name: str, expected: object) -> None:
    assert to_item(b"{" + BASE + b", " + fields + b"}")[name] == expected


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param(b'"Data2": 1e200', "number_out_of_range", id="too-large"),
        pytest.param(b'"Data3": -1e-200', "number_out_of_range", id="too-small"),
        pytest.param(b'"": 1', "bad_attribute_name", id="empty-name"),
        pytest.param(b'"m": {"": 1}', "bad_attribute_name", id="empty-nested-name"),
    ],
)
def test_values_dynamodb_refuses_are_invalid(fields: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as caught:
        to_item(b"{" + BASE + b", " + fields + b"}")
    assert caught.value.reason == reason


def test_zero_is_in_range() -> None:
    assert to_item(b"{" + BASE + b', "Data2": 0.0}')["Data2"] == {"N": "0.0"}


# What each field of a reading may hold, as JSON text: the usual value first, then every edge
# the shorter ways must leave to the general rules (or take with the same answer)
TEXTS = ['"HW-1"', '""', '"HW-€"', '"HW-\\u20ac"', '"a\\"b"', '"' + "x" * 300 + '"', "42", "null"]
SHAPES: dict[str, list[str]] = {
    "hardwareID": TEXTS,
    "Timestamp": ['"2026-01-01T00:00:00Z"', '"2026-01-01T00:00:00.5+02:00"', '"soon"', *TEXTS],
    "Data1": ['"LNK-1"', *TEXTS, "3", "2.5", "true", '{"a": 1}'],
    "Data2": [
        *("12.5", "-0.25", "0.0", "-0.0", "0", "-0", "1.50", "0.00001", "5", "100", "1e5"),
        *("1E-200", "1e200", "1e125", "9.99e-131", "12345678901234", "123456789012345"),
        *("0.12345678901234567890", "99999999999999999999", '"fast"', "null", "[1]", "true"),
        *("007", "-", "01.5", "-5", "1.", ".5", "0." + "1" * 40, "1" * 40),
        *("0." + "0" * 140 + "1", "1" + "0" * 130),  # beyond DynamoDB's range, written out
    ],
    "Data3": ["26.4", "1e-129", "-1e-200", "0.0", "123456789.123", "true", "0", "null"],
}


def reading_text(
    rng: random.Random, shuffled: float, separators: list[tuple[str, str]], extra: bool = False
) -> str:
    """A reading of random SHAPES (each field sometimes missing), sometimes with an extra
    field, in another order (``shuffled``: how often), written with one of ``separators``."""
    fields = [
        (name, rng.choice(values) if rng.random() < 0.3 else values[0])
        for name, values in SHAPES.items()
        if rng.random() > 0.05
    ]
    if extra and rng.random() < 0.05:
        fields.append(("extra", rng.choice(['"x"', "1.5", "null"])))
    if rng.random() < shuffled:
        rng.shuffle(fields)
    comma, colon = rng.choice(separators)
    return "{" + comma.join(f'"{name}"{colon}{value}' for name, value in fields) + "}"


def as_numbers(outcome: tuple[Any, ...]) -> tuple[Any, ...]:
    """Number attributes as numbers (``1.50`` and ``1.5`` are one number to DynamoDB)."""
    if outcome[0] != "item":
        return outcome
    item = {
        name: {"N": Decimal(value["N"])} if "N" in value else value
        for name, value in outcome[1].items()
    }
    return ("item", item)


def outcome(data: bytes, make: Any) -> tuple[Any, ...]:
    try:
        return as_numbers(("item", make(data)))
    except InvalidRecord as exc:
        return ("refused", exc.reason, exc.detail)


def test_the_shorter_ways_give_what_the_general_rules_give() -> None:
    """``to_item`` reads the canonical reading from its bytes (``_canonical_item``) and the
    usual one once parsed (``_usual_item``): on records of every shape — each field missing,
    of another type, empty, escaped, at DynamoDB's number limits, an extra field —, written
    compact, with spaces or in another order, it gives the same item (numbers as numbers) or
    the same refusal as the general rules."""
    from consumer.feeds.fields import fits
    from consumer.feeds.telemax import _canonical_item, _item_of

    def general(data: bytes) -> Any:
        return fits(_item_of(decode_object(data)), data)

    rng = random.Random(16)
    taken = {"canonical": 0, "usual": 0, "general": 0}
    for _ in range(5_000):
        text = reading_text(rng, 0.25, [(",", ":"), (", ", ": "), (" ,\n ", " :\t")], extra=True)
        data = text.encode()
        assert outcome(data, to_item) == outcome(data, general), text
        if _canonical_item(data) is not None:
            taken["canonical"] += 1
        elif outcome(data, general)[0] == "item" and _usual_item(decode_object(data)):
            taken["usual"] += 1
        else:
            taken["general"] += 1
    assert min(taken.values()) > 400, taken  # each way taken, many times


def test_the_encoder_writes_exactly_the_item_to_item_makes() -> None:
    """``to_item``'s encoder (what the worker writes straight into a request) on records of
    every shape: None, or the JSON of the very item to_item makes — the same strings, the
    numbers as written (not merely as numbers), byte for byte as the item would be encoded —
    with that item's attribute values, keyed by its key. It takes the canonical ASCII
    reading, and leaves the rest to to_item (which decides and explains)."""
    from consumer.feeds.telemax import _canonical_item

    rng = random.Random(17)
    encoded = canonical = with_del = 0
    for _ in range(5_000):
        text = reading_text(rng, 0.2, [(",", ":"), (",", ":"), (", ", ": ")])
        if rng.random() < 0.1:  # an odd character in a string: DEL, a control, non-ASCII
            text = text.replace(
                "LNK-", rng.choice(["LNK\x7f-", "LNK\t-", "LNK-é", "LNK-\udcff"]), 1
            )
        data = text.encode(errors="surrogateescape")  # (\udcff: the byte 0xff, not UTF-8)
        found = telemax.encode(data)
        canonical += _canonical_item(data) is not None and data.isascii()
        if found is None:
            assert _canonical_item(data) is None or not data.isascii(), text
            continue
        encoded += 1
        with_del += b"\x7f" in data
        key, written, _, _ = found
        item = to_item(data)
        assert orjson.loads(written) == item, text
        assert written == orjson.dumps(item), text
        assert as_item(found) == item, text  # its values and fields
        assert key == (item["hardwareID"]["S"], item["Timestamp"]["S"]), text
    assert encoded == canonical > 500  # every canonical ASCII reading taken, many times
    assert with_del > 10  # DEL is ASCII, and JSON takes it raw


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (
            b'{"hardwareID":"HW-\xc3\xa9","Timestamp":"2026-01-01T00:00:00Z","Data1":"L","Data2":1,"Data3":2}',
            "non-ASCII",
        ),
        (
            b'{"hardwareID":"HW-\xff","Timestamp":"2026-01-01T00:00:00Z","Data1":"L","Data2":1,"Data3":2}',
            "not UTF-8",
        ),
        (
            b'{"hardwareID":"HW-1","Timestamp":"2026-13-01T00:00:00Z","Data1":"L","Data2":1,"Data3":2}',
            "not a time",
        ),
        (
            b'{"hardwareID":"","Timestamp":"2026-01-01T00:00:00Z","Data1":"L","Data2":1,"Data3":2}',
            "no device",
        ),
        (
            b'{"hardwareID":"HW-1","Timestamp":"2026-01-01T00:00:00Z","Data1":"L","Data2":-0,"Data3":2}',
            "-0",
        ),
        (
            b'{"hardwareID":"HW-1","Timestamp":"2026-01-01T00:00:00Z","Data1":"L","Data2":1e5,"Data3":2}',
            "exponent",
        ),
    ],
)
def test_the_encoder_leaves_to_to_item_what_it_must_judge(data: bytes, why: str) -> None:
    assert telemax.encode(data) is None, why


def test_the_batch_encoder_answers_what_the_encoder_answers_record_by_record() -> None:
    """``encode_batch`` (one match over the batch joined) on batches of records of every
    shape, canonical or not, some empty, odd (a NUL, non-ASCII, large): in each batch each
    answer is ``encode``'s of that record, in order."""
    rng = random.Random(18)
    odd = [
        b"",
        b"{}",
        b"\x00",
        encode(reading()) + b"\x00",
        b"\x00" + encode(reading()),
        encode(reading()) + b" x",
        encode(reading(hardware_id="HW-\u00e9")),
        encode(reading(hardware_id="HW-" + "x" * MAX_ITEM_BYTES)),
    ]
    taken = 0
    for size in [*range(8), *rng.choices(range(8, 300), k=60)]:
        batch = []
        for _ in range(size):
            text = reading_text(rng, 0.1, [(",", ":"), (",", ":"), (", ", ": ")])
            batch.append(text.encode() if rng.random() > 0.02 else rng.choice(odd))
        expected = [telemax.encode(data) for data in batch]
        assert telemax.encode_batch(batch) == expected, batch
        taken += sum(found is not None for found in expected)
    for data in odd:  # alone, and between canonical readings
        batch = [encode(reading()), data, encode(reading(hardware_id="HW-2"))]
        assert telemax.encode_batch(batch) == [telemax.encode(d) for d in batch], data
        assert telemax.encode_batch([data]) == [telemax.encode(data)], data
    assert taken > 1_000


@pytest.mark.parametrize("spaced_share", [0.0, 0.02, 0.5, 1.0])
def test_the_batch_encoder_answers_the_same_however_many_are_written_spaced(
    spaced_share: float,
) -> None:
    """Compact readings are matched over the batch, the few others one by one, and a batch
    of mostly spaced ones (as Python's json.dumps writes them) again at once: each answer
    is ``encode``'s of that record whichever way the batch went."""
    rng = random.Random(int(spaced_share * 100))
    for size in [1, 17, 64, 300]:
        readings = [reading(hardware_id=f"HW-{n}", Data2=rng.randrange(1000)) for n in range(size)]
        batch = [
            json.dumps(value).encode() if rng.random() < spaced_share else encode(value)
            for value in readings
        ]
        found = telemax.encode_batch(batch)
        assert found == [telemax.encode(data) for data in batch]
        assert None not in found  # all canonical, compact or spaced


@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("stamp", ["2026-02-30T10:00:00Z", "yesterday", "", "2026-13-01"])
def test_a_batch_whose_every_reading_matched_leaves_one_that_is_not_a_time_to_to_item(
    spaced: bool, stamp: str
) -> None:
    """Every record of the batch has the canonical shape (the entries are then made over the
    whole batch at once): the one whose Timestamp is not a time is None, the others encoded,
    as ``encode`` answers each."""
    write = json.dumps if spaced else (lambda value: orjson.dumps(value).decode())
    batch = [write(reading(hardware_id=f"HW-{n}")).encode() for n in range(40)]
    batch[17] = write(reading(hardware_id="HW-17", Timestamp=stamp)).encode()
    found = telemax.encode_batch(batch)
    assert found == [telemax.encode(data) for data in batch]
    assert found[17] is None
    assert found.count(None) == 1


def test_the_encoder_leaves_a_large_reading_to_to_item_which_checks_its_size() -> None:
    data = encode(reading(hardware_id="HW-" + "x" * MAX_ITEM_BYTES))
    assert telemax.encode(data) is None
    with pytest.raises(InvalidRecord) as refused:
        to_item(data)
    assert refused.value.reason == "item_too_large"


def test_shared_attribute_values_stay_bounded() -> None:
    for n in range(3 * telemax._SHARED_LIMIT):
        item = to_item(encode(reading(hardware_id=f"HW-{n}")))
        assert item["hardwareID"] == {"S": f"HW-{n}"}
    assert len(telemax._shared) <= telemax._SHARED_LIMIT
