"""A partial aggregate's cells: a record in the window of its own time and group, late
records counted not aggregated, batches and splits exactly as records one by one."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.feeds import FEEDS
from consumer.insights import codec, memo
from consumer.insights.cells import Partial
from consumer.insights.stats import ALPHA, Stat
from producer.schemas import records
from tests.unit.consumer.insights.test_windows import SPEC, T0, item


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


def reference_cells(
    seconds: list[int | None], groups: list[Any], values: list[str], arrivals: list[Any]
) -> dict[Any, tuple[int, int, list[str]]]:
    """What add_columns must make, as its docstring says it: (count, late, values) a cell."""
    cells: dict[Any, tuple[int, int, list[str]]] = {}
    for second, group, value, arrival in zip(seconds, groups, values, arrivals, strict=True):
        if second is None:
            continue
        key = (second - second % 300, group)
        count, late, kept = cells.get(key, (0, 0, []))
        if arrival is not None and not math.isnan(arrival) and arrival > key[0] + 300 + 3600:
            cells[key] = (count, late + 1, kept)
        else:
            cells[key] = (count + 1, late, [*kept, value])
    return cells


@pytest.mark.parametrize(
    "case",
    ["on-time", "one-late", "late-last", "nan-first", "none-first", "untimed-first", "one"],
)
@pytest.mark.parametrize("seed", range(4))
def test_columns_give_each_cell_its_rows_whichever_way_they_are_grouped(
    case: str, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usual columns (every row timed, none late: grouped in C) and each way of not being
    usual (grouped one by one) give the cells the rows give one at a time — with the memo of
    window starts cleared as it fills, too."""
    if seed % 2:
        monkeypatch.setattr(memo, "MEMO_SIZE", 3)
    rng = random.Random(seed)
    count = 1 if case == "one" else rng.randrange(2, 200)
    base = int(T0)
    seconds: list[int | None] = [base + rng.randrange(-400, 1200) for _ in range(count)]
    groups = [(("link", f"L{rng.randrange(3)}"),) for _ in range(count)]
    values = [f"{rng.uniform(0, 50):.2f}" for _ in range(count)]
    arrivals: list[Any] = [s + 10.0 for s in seconds if s is not None]
    somewhere = rng.randrange(count)
    if case == "one-late":
        arrivals[somewhere] += 2 * 3600
    elif case == "late-last":  # late, yet not the latest arrival of the batch
        arrivals[-1] = seconds[-1] - seconds[-1] % 300 + 3901  # type: ignore[operator]
        arrivals[0] = max(arrivals) + 1 if count > 1 else arrivals[0]
        seconds[0] = base + 10_000 if count > 1 else seconds[0]
    elif case == "nan-first":
        arrivals[0], arrivals[somewhere] = math.nan, arrivals[somewhere] + 2 * 3600
    elif case == "none-first":
        arrivals[0], arrivals[somewhere] = None, arrivals[somewhere] + 2 * 3600
    elif case == "untimed-first":
        seconds[0] = None
    partial = Partial(SPEC, lateness_s=3600)
    partial.add_columns(seconds, groups, [values], arrivals)
    made = {key: (c.count, c.late, c.pending.get("v", [])) for key, c in partial.cells.items()}
    assert made == reference_cells(seconds, groups, values, arrivals)
    assert partial.untimed == seconds.count(None)


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


@pytest.mark.parametrize("seed", range(4))
def test_small_cells_stored_as_values_merge_as_their_statistics_would(seed: int) -> None:
    """Segments of a few records a cell (stored as their values: codec.RAW_VALUES) and of
    many (stored as statistics), through the codec and merged in the stream's order: the
    figures of the whole, exactly — sums to the exponent, the first least and greatest
    with their text."""
    rng = random.Random(seed)
    # the least and the greatest each written two ways: which text a cell keeps depends on
    # the order its values are read in
    texts = ["-0.5", "-0.50", "3", "3.0", "0", "-0.00", "700.25", "700.250"]
    items = [
        item(T0 + n, f"L{rng.randrange(3)}", rng.choice(texts) if rng.random() < 0.7 else
             f"{rng.uniform(0, 700):.2f}")
        for n in range(1200)
    ]  # fmt: skip
    whole = Partial(SPEC)
    whole.add_all((one, None) for one in items)
    merged = Partial(SPEC)
    at, raw, summed = 0, 0, 0
    while at < len(items):
        size = rng.choice([1, 2, 5, 40, 300])
        part = Partial(SPEC)
        part.add_all((one, None) for one in items[at : at + size])
        small = sum(1 for c in part.cells.values() if c.unread(codec.RAW_VALUES) is not None)
        raw, summed = raw + small, summed + len(part.cells) - small
        days = codec.parts_by_day(part.cells)
        merged.merge(
            Partial(SPEC, cells=dict(kv for p in days["2026-12-03"] for kv in codec.cells_of(p)))
        )
        at += size
    assert raw and summed, "some cells were stored as their values, some as statistics"
    assert merged.cells.keys() == whole.cells.keys()
    for key, cell in whole.cells.items():
        other = merged.cells[key]
        assert other.count == cell.count
        assert other.stats["v"].encode() == cell.stats["v"].encode()
