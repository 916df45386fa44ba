"""Event-time windows: a record's time, group and measures read one by one or a batch at a time."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.feeds import FEEDS
from consumer.insights import memo
from consumer.insights.windows import InsightSpec, Measure, field
from producer.schemas import records

SPEC = InsightSpec(window_s=300, time_field="at", group_fields=("link",), measures=(field("v"),))
T0 = datetime(2026, 12, 3, 7, 0, tzinfo=UTC).timestamp()


def item(at: float, link: str = "L1", v: str = "1.5") -> dict[str, Any]:
    when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return {"at": {"S": when}, "link": {"S": link}, "v": {"N": v}}


ODD_TIMES = [
    "2026-12-03T10:00:00Z",
    "2026-12-03T10:00:00.250Z",
    "2026-12-03T10:00:00.Z",
    "2026-12-03T10:00:00+02:00",
    "2026-12-03T10:00:00",
    "2026-12-03 10:00:59.5Z",
    "2026-02-30T10:00:00Z",
    "2026-12-03T10:00:00.12xZ",
    "yesterday",
    "",
]
ODD_ATTRIBUTES: list[Any] = [{"S": "L1"}, {"S": "7"}, {"N": "7"}, {"N": "7.50"}, {"S": ""}, None]
ODD_NUMBERS: list[Any] = [{"N": "1.5"}, {"N": "-2"}, {"N": "x"}, {"S": "3"}, None]


def odd_item(rng: random.Random) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, choices in (("at", ODD_TIMES), ("link", ODD_ATTRIBUTES), ("zone", ODD_ATTRIBUTES)):
        choice = rng.choice(choices)
        if choice is not None:
            found[name] = {"S": choice} if name == "at" else choice
    for name in ("v", "w"):
        number = rng.choice(ODD_NUMBERS)
        if number is not None:
            found[name] = number
    if rng.random() < 0.05:
        found.pop("at", None)
    return found


def read_one_by_one(spec: InsightSpec, batch: list[dict[str, Any]]) -> list[Any]:
    """Each item's event second, group and measures' raw values, read on its own."""
    return [
        (
            spec.event_second(one),
            spec.group_of(one),
            tuple(measure.raw(one) for measure in spec.measures),
        )
        for one in batch
    ]


def read_at_once(spec: InsightSpec, batch: list[dict[str, Any]]) -> list[Any]:
    """The same, from columns_of's columns."""
    seconds, groups, columns = spec.columns_of(batch)
    values = list(zip(*columns, strict=True)) if columns else [()] * len(batch)
    return list(zip(seconds, groups, values, strict=True))


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        InsightSpec(300, "at", ("link", "zone"), (field("v"), field("w"))),
        InsightSpec(3600, "at", ("zone",), (field("v"), Measure("double", lambda i: Decimal(2)))),
        InsightSpec(60, "at", ("link",), ()),
    ],
    ids=["one-group", "two-groups", "computed-measure", "no-measure"],
)
def test_a_batchs_facts_are_each_items_read_one_by_one(spec: InsightSpec) -> None:
    """columns_of (memos, a pass per column) equals the plain reading of each item — its event
    second, its group, each measure's raw value — on odd items, cold and with warm memos."""
    rng = random.Random(5)
    for _ in range(3):  # the first batch fills the memos, the next read from them
        batch = [odd_item(rng) for _ in range(400)]
        expected = read_one_by_one(spec, batch)
        assert read_at_once(spec, batch) == expected
        assert [spec.fact_of(one) for one in batch] == expected
    assert spec.columns_of([]) == ([], [], [[] for _ in spec.measures])


USUAL_FORMS = [  # a usual time's tail; the last two are not times, but end as one does
    "2026-12-03T10:{:02d}:{:02d}Z",
    "2026-12-03T10:{:02d}:{:02d}.5Z",
    "2026-12-03T10:{:02d}:{:02d}.Z",
    "2026-12-03T10:{:02d}:{:02d}.123456Z",
    "2026-12-03 10:{:02d}:{:02d}.5Z",
    "2026-02-30T10:{:02d}:{:02d}Z",
]


def usual_item(rng: random.Random) -> dict[str, Any]:
    """An item of the usual shape: time and group strings, number measures."""
    return {
        "at": {"S": rng.choice(USUAL_FORMS).format(rng.randrange(60), rng.randrange(60))},
        "link": {"S": rng.choice(["L1", "L2", "7", ""])},
        "v": {"N": rng.choice(["1.5", "-2", "x", "0"])},
        "w": {"N": "3"},
        "extra": {"BOOL": True},
    }


@pytest.mark.parametrize(
    "spec",
    [
        InsightSpec(300, "at", ("link",), (field("v"), field("w"))),
        InsightSpec(60, "at", ("link",), ()),
        InsightSpec(300, "at", ("link", "zone"), (field("v"),)),  # never the usual shape
    ],
    ids=["one-group", "no-measure", "two-groups"],
)
def test_a_usual_batch_read_at_once_is_its_items_read_one_by_one(spec: InsightSpec) -> None:
    """A batch of usual items is read in one pass (columns_of's fast path); with one odd
    item anywhere in it — an attribute missing, of another type, an empty one — the batch
    is read column by column: the facts are the same either way."""
    rng = random.Random(7)
    for trial in range(40):
        batch = [usual_item(rng) for _ in range(rng.randrange(1, 60))]
        if trial % 2:
            odd = odd_item(rng)
            odd["link"] = rng.choice([{"N": "7"}, {}, {"S": "L9"}])
            batch[rng.randrange(len(batch))] = odd
        expected = read_one_by_one(spec, batch)
        assert read_at_once(spec, batch) == expected


def as_encoded(one: dict[str, Any], fields: dict[Any, Any]) -> Any:
    """The entry an encoder would make of an item of S and N attributes (the item itself
    otherwise); ``fields`` keeps one fields tuple per shape, as an encoder shares its own."""
    if not one or not all(len(v) == 1 and next(iter(v)) in ("S", "N") for v in one.values()):
        return one
    shape = tuple((name, kind) for name, value in one.items() for kind in value)
    values = tuple(v.encode() for value in one.values() for v in value.values())
    return (), orjson.dumps(one), values, fields.setdefault(shape, shape)


def usual_batch(rng: random.Random, most: int) -> list[dict[str, Any]]:
    """1 to ``most - 1`` usual items with only the attributes an encoder writes."""
    batch = [usual_item(rng) for _ in range(rng.randrange(1, most))]
    for one in batch:
        one.pop("extra")
    return batch


@pytest.mark.parametrize(
    "spec",
    [
        InsightSpec(300, "at", ("link",), (field("v"), field("w"))),
        InsightSpec(300, "at", ("link", "zone"), (field("v"), field("w"))),
        InsightSpec(3600, "at", ("link",), (field("v"), Measure("double", lambda i: Decimal(2)))),
        InsightSpec(60, "at", ("link",), ()),
    ],
    ids=["one-group", "two-groups", "computed-measure", "no-measure"],
)
def test_encoded_entries_are_read_as_the_items_they_stand_for(spec: InsightSpec) -> None:
    """A batch of entries an encoder wrote (``kernel.handlers.Encoded``) is read from their
    values: the facts of the items they stand for — every entry encoded, or some of them, of
    one shape or several, usual or odd."""
    rng = random.Random(11)
    shapes: dict[Any, Any] = {}
    for trial in range(60):
        batch = usual_batch(rng, 40)
        if trial % 3 == 1:  # another shape of items among them
            batch[rng.randrange(len(batch))].pop("w")
        if trial % 3 == 2:  # odd items, some of them not encoded at all
            batch += [odd_item(rng) for _ in range(3)]
        if trial % 4 == 3:  # one shape, not the usual one: a group or a measure's type
            for one in batch:
                one["link" if trial % 8 == 3 else "v"] = (
                    {"N": "7"} if trial % 8 == 3 else {"S": "3"}
                )
        entries = [as_encoded(one, shapes) if rng.random() < 0.8 else one for one in batch]
        assert read_at_once(spec, entries) == read_one_by_one(spec, batch)


def test_encoded_groups_through_a_memo_that_fills_stay_each_items_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An encoder's group values are looked up as bytes in a bounded memo: cleared when a
    batch's new values would overfill it, the batch's others (known before) are made anew."""
    monkeypatch.setattr(memo, "MEMO_SIZE", 3)
    spec = InsightSpec(300, "at", ("link",), (field("v"), field("w")))
    rng = random.Random(2)
    shapes: dict[Any, Any] = {}
    for _ in range(40):
        batch = usual_batch(rng, 12)
        for one in batch:
            one["link"] = {"S": f"L{rng.randrange(6)}"}
        entries = [as_encoded(one, shapes) for one in batch]
        assert read_at_once(spec, entries) == read_one_by_one(spec, batch)


def test_the_telemax_feeds_encoded_readings_give_its_readings_facts() -> None:
    from consumer.feeds import telemax as handler

    spec = FEEDS["telemax"].insights
    assert spec is not None
    readings = [orjson.dumps(r) for r, _ in records("telemax", 300, seed=3)]
    entries = [handler.encode(data) for data in readings]
    assert None not in entries
    items = [handler.to_item(data) for data in readings]
    assert read_at_once(spec, entries) == read_one_by_one(spec, items)  # type: ignore[arg-type]
    assert spec._encoded_plans  # read from their values, not made into items


def test_times_read_at_once_stay_each_items_own() -> None:
    """The usual times are matched in one pass over the texts joined by newlines: a text
    holding a newline (two times in one, then a text that is none) must not shift them."""
    spec = InsightSpec(60, "at", ("link",), ())
    texts = ["2026-12-03T10:00:00Z\n2026-12-03T10:00:01Z", "garbage", "2026-12-03T10:00:02Z"]
    batch = [{"at": {"S": text}, "link": {"S": "L1"}} for text in texts]
    seconds, _, _ = spec.columns_of(batch)
    assert seconds == [None, None, spec.event_second(batch[2])]
    assert seconds[2] is not None
