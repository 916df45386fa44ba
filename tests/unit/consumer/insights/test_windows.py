"""Event-time windows and their statistics: pure, exact where the issue says exact."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.feeds import FEEDS
from consumer.insights.cells import Partial
from consumer.insights.stats import ALPHA, Stat
from consumer.insights.windows import InsightSpec, Measure, epoch_second, field
from producer.schemas import records

SPEC = InsightSpec(window_s=300, time_field="at", group_fields=("link",), measures=(field("v"),))
T0 = datetime(2026, 12, 3, 7, 0, tzinfo=UTC).timestamp()


def item(at: float, link: str = "L1", v: str = "1.5") -> dict[str, Any]:
    when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return {"at": {"S": when}, "link": {"S": link}, "v": {"N": v}}


def test_a_record_counts_in_the_window_of_its_own_time_and_group() -> None:
    partial = Partial(SPEC)
    partial.add(item(T0), arrival=T0 + 3_000)  # arrived late, but within the lateness
    partial.add(item(T0 + 299.999), arrival=None)
    partial.add(item(T0 + 300, link="L2"), arrival=None)
    partial.add({"link": {"S": "L1"}}, arrival=None)  # no time
    start = int(T0)
    assert sorted(partial.cells) == [(start, (("link", "L1"),)), (start + 300, (("link", "L2"),))]
    assert partial.cells[(start, (("link", "L1"),))].count == 2
    assert partial.untimed == 1


@pytest.mark.parametrize(
    ("delay", "late"), [(300 + 3600, False), (300 + 3600.001, True)], ids=["edge", "beyond"]
)
def test_a_record_arriving_beyond_the_lateness_is_counted_late_not_aggregated(
    delay: float, late: bool
) -> None:
    partial = Partial(SPEC, lateness_s=3600)
    partial.add(item(T0), arrival=T0 + delay)
    (cell,) = partial.cells.values()
    assert (cell.late, cell.count) == ((1, 0) if late else (0, 1))
    assert ("v" in cell.stats) is not late


@pytest.mark.parametrize("seed", range(8))
def test_a_batch_added_at_once_counts_as_its_records_one_by_one(seed: int) -> None:
    """Late, untimed and unknown-arrival (None, NaN) records among on-time ones, or none of
    them: a batch's columns added at once give the cells, late counts and statistics its
    records give one at a time."""
    rng = random.Random(seed)
    records: list[tuple[dict[str, Any], float | None]] = []
    for _ in range(rng.randrange(1, 300)):
        at = T0 + rng.uniform(0, 1200)
        one = item(at, f"L{rng.randrange(3)}", f"{rng.uniform(0, 50):.{rng.randrange(3)}f}")
        arrival: float | None = at + rng.choice([10.0, 10.0, 10.0, 2 * 3600.0])
        if seed % 2:  # half the seeds: the usual batch, every record timed and on time
            arrival = at + 10.0
        elif rng.random() < 0.1:
            arrival = rng.choice([None, math.nan])
        if not seed % 2 and rng.random() < 0.05:
            del one["at"]
        records.append((one, arrival))
    at_once, one_by_one = Partial(SPEC, lateness_s=3600), Partial(SPEC, lateness_s=3600)
    at_once.add_all(records)
    for one, arrival in records:
        one_by_one.add(one, arrival)
    assert at_once.untimed == one_by_one.untimed
    assert sorted(at_once.cells) == sorted(one_by_one.cells)
    for key, cell in at_once.cells.items():
        theirs = one_by_one.cells[key]
        assert (cell.count, cell.late, cell.stats) == (theirs.count, theirs.late, theirs.stats)


def test_partials_merged_in_any_split_equal_the_whole_exactly() -> None:
    rng = random.Random(7)
    items = [
        item(T0 + rng.uniform(0, 3000), f"L{rng.randrange(4)}", f"{rng.lognormvariate(2, 1):.2f}")
        for _ in range(3000)
    ]
    whole = Partial(SPEC)
    for one in items:
        whole.add(one, arrival=None)
    merged = Partial(SPEC)
    for chunk in range(0, len(items), 137):  # shards' segments, merged in another order
        part = Partial(SPEC)
        for one in items[chunk : chunk + 137]:
            part.add(one, arrival=None)
        merged.merge(Partial(SPEC, cells=roundtrip(part)))
    assert merged.cells.keys() == whole.cells.keys()
    for key, cell in whole.cells.items():
        other = merged.cells[key]
        a, b = cell.stats["v"], other.stats["v"]
        assert (other.count, b.count, b.total, b.low, b.high) == (
            cell.count, a.count, a.total, a.low, a.high
        )  # fmt: skip
        values = sorted(float(Decimal(i["v"]["N"])) for i in items if window(i) == key)
        for q in (0.5, 0.95, 0.99):
            assert b.quantile(q) == a.quantile(q), "a merged sketch is the whole's sketch"
            true = values[int(q * (len(values) - 1))]  # the rank DDSketch answers for
            estimate = b.quantile(q)
            assert estimate is not None and abs(estimate - true) <= ALPHA * abs(true) + 1e-9


def window(one: dict[str, Any]) -> Any:
    when = datetime.fromisoformat(one["at"]["S"]).timestamp()
    return (int(when // 300) * 300, (("link", one["link"]["S"]),))


def roundtrip(partial: Partial) -> Any:
    """The cells through their JSON encoding (what DynamoDB keeps)."""
    for cell in partial.cells.values():
        cell.stats = {
            name: Stat.decode(orjson.loads(orjson.dumps(stat.encode())))
            for name, stat in cell.stats.items()
        }
    return partial.cells


@pytest.mark.parametrize("feed", ["telemax", "taxi", "orders"])
def test_every_built_in_feed_aggregates_what_the_producer_generates(feed: str) -> None:
    spec = FEEDS[feed].insights
    assert spec is not None
    start = datetime(2026, 12, 3, tzinfo=UTC)
    partial = Partial(spec)
    for record, _ in records(feed, 500, seed=3, start=start):
        partial.add(FEEDS[feed].to_item(orjson.dumps(record)), arrival=None)
    assert partial.untimed == 0
    assert sum(cell.count for cell in partial.cells.values()) == 500
    for cell in partial.cells.values():
        for measure in spec.measures:
            assert measure.name in cell.stats or feed == "taxi", measure.name
    days = {datetime.fromtimestamp(start_s, UTC).date() for start_s, _ in partial.cells}
    assert days <= {start.date(), (start + timedelta(days=1)).date()}


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03T10:00:00Z",
        "2026-12-03T10:00:00.999999Z",
        "2026-12-03T10:00:00.Z",
        "2026-12-03T10:00:00.1234567890Z",
        "2026-12-03 10:00:59.5Z",
        "2026-12-03T10:00:00+02:00",
        "2026-12-03T10:00:00.5+02:00",
        "2026-12-03T10:00:00",
        "1969-12-31T23:59:59.5Z",
        "2026-12-03T10:00:60Z",
        "2026-12-03T10:00:00.12xZ",
        "2026-12-03T10:00:00.\u0661Z",  # an Arabic-Indic digit
        "2026-02-30T10:00:00Z",
        "20261203T100000Z",
        "yesterday",
        "",
    ],
)
def test_the_event_second_is_what_fromisoformat_reads_memoised_or_not(text: str) -> None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        expected = None
    else:
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        expected = math.floor(when.timestamp())
    assert epoch_second(text) == expected
    assert epoch_second(text) == expected  # memoised


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
        batch = [usual_item(rng) for _ in range(rng.randrange(1, 40))]
        for one in batch:
            one.pop("extra")
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
