"""A segment's rows aggregated with numpy give the very cells the list path gives — counts,
lates, sums to the last digit and exponent, first least and greatest texts, bins — and any
segment off the usual shape is left to the list path untouched."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest

from consumer.insights.cells import Cell, Partial
from consumer.insights.codec import parts_by_day
from consumer.insights.kept import BatchFacts, add_segment, batch_facts
from consumer.insights.vector import add_runs
from consumer.insights.windows import InsightSpec, field
from consumer.pipeline.pieces import Entry
from producer.schemas import records
from tests.unit.consumer.insights.test_kept import summary

SPEC = InsightSpec(300, "at", ("link",), (field("v"), field("w")))
EPOCH = 1_796_289_600  # 2026-12-03T09:20:00Z, a window's start


def plain_number(rng: random.Random) -> str:
    """A plain decimal of any usual form: integers, -0, trailing zeros, 1 to 4 places."""
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(-50, 50))
    if kind == 1:
        return rng.choice(["0", "-0", "0.0", "-0.00", "10", "10.50"])
    places = rng.randint(1, 4)
    text = f"{rng.uniform(-1000, 1000):.{places}f}"
    return text if kind != 2 else text.rstrip("0").rstrip(".") or "0"


def usual_batch(rng: random.Random, first: int, size: int, late: bool = False) -> BatchFacts:
    """A batch of the usual shape: timed rows in three windows, four links, plain numbers;
    arrivals on time, late, or unknown (``late``: every row late, in a fourth window)."""
    items, arrivals = [], []
    for _ in range(size):
        second = EPOCH + (1_200 if late else 0) + rng.randrange(300 if late else 900)
        items.append(
            {
                "at": {"S": f"2026-12-03T09:{20 + (second - EPOCH) // 60}:{second % 60:02d}Z"},
                "link": {"S": rng.choice(["L1", "L2", "L3", "7"])},
                "v": {"N": plain_number(rng)},
                "w": {"N": rng.choice([plain_number(rng), "3"])},
            }
        )
        edge = second - second % 300 + 300 + 3_600  # the last arrival not late (3,600 s late)
        arrivals.append(
            float(second + 9_000)
            if late
            else rng.choice([None, second + 5.0, second + 9e3, edge, edge + 0.001])
        )
    positions = [(str(first + n), 0) for n in range(size)]
    if rng.random() < 0.3:  # groups made afresh: equal, not the same objects
        SPEC._group_memo.clear()
    return batch_facts(SPEC, items, positions, arrivals)


def runs_of(rng: random.Random) -> list[tuple[BatchFacts, int, int]]:
    """A segment's runs: whole batches, and a first and last one cut anywhere; one batch in
    five late through and through."""
    runs = []
    for b in range(rng.randint(1, 5)):
        batch = usual_batch(rng, 1_000 * b, rng.randint(1, 60), late=rng.random() < 0.2)
        start = rng.randrange(len(batch)) if b == 0 else 0
        runs.append((batch, start, rng.randint(start + 1, len(batch))))
    return runs


def by_lists(runs: list[tuple[BatchFacts, int, int]]) -> Partial:
    partial = Partial(SPEC, 3_600)
    for batch, start, stop in runs:
        batch.add_to(partial, start, stop)
    return partial


@pytest.mark.parametrize("seed", range(40))
def test_the_usual_segment_gives_the_list_paths_cells(seed: int) -> None:
    rng = random.Random(seed)
    runs = runs_of(rng)
    ours = Partial(SPEC, 3_600)
    assert add_runs(ours, runs)
    assert summary(ours) == summary(by_lists(runs))
    # the stored form too: the same lines, in the same bytes
    assert parts_by_day(ours.cells) == parts_by_day(by_lists(runs).cells)


def test_the_cases_the_exactness_turns_on_are_in_the_draw() -> None:
    """Late and unknown arrivals, several windows and groups, zero and negative values,
    trailing zeros: the equivalence above is not a comparison of easy cells."""
    rng = random.Random(3)
    partial = Partial(SPEC, 3_600)
    for _ in range(10):
        assert add_runs(partial, runs_of(rng))
    cells = partial.cells.values()
    assert any(c.late for c in cells) and any(c.late and not c.count for c in cells)
    assert len({start for start, _ in partial.cells}) == 4
    stats = [s for c in cells for s in c.stats.values()]
    assert any(s.zeros for s in stats) and any(s.negative for s in stats)
    assert any(str(s.total).endswith("0") and "." in str(s.total) for s in stats)


def off_grid(runs: list[tuple[BatchFacts, int, int]], text: str) -> None:
    batch = runs[0][0]
    values = batch.columns[0]
    assert isinstance(values, str)
    batch.columns[0] = text + values[values.find("\x1f") :] if "\x1f" in values else text


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda runs: off_grid(runs, ""), id="missing"),
        pytest.param(lambda runs: off_grid(runs, "1e5"), id="exponent"),
        pytest.param(lambda runs: off_grid(runs, "x"), id="not-a-number"),
        pytest.param(lambda runs: off_grid(runs, "1.5.5"), id="two-points"),
        pytest.param(lambda runs: off_grid(runs, "12345678901234567.5"), id="beyond-the-grid"),
        pytest.param(lambda runs: off_grid(runs, "0." + "1" * 23), id="23-places"),
        pytest.param(lambda runs: off_grid(runs, "١٢"), id="not-ascii"),
        pytest.param(lambda runs: runs[0][0].columns.__setitem__(0, ["1", None]), id="a-list"),
        pytest.param(lambda runs: runs[0][0].seconds.__setitem__(0, None), id="untimed"),
    ],
)
def test_a_segment_off_the_usual_shape_is_left_to_the_lists(spoil: Any) -> None:
    runs = runs_of(random.Random(7))
    batch, _, stop = runs[0]
    runs[0] = (batch, 0, stop)  # the spoilt first row inside the segment, and not late
    batch.arrivals[0] = math.nan
    spoil(runs)
    partial = Partial(SPEC, 3_600)
    partial.cells[(0, ())] = Cell(count=1)
    assert not add_runs(partial, runs)
    assert partial.cells == {(0, ()): Cell(count=1)} and not partial.untimed


def test_cells_already_in_the_partial_are_merged_into() -> None:
    rng = random.Random(11)
    first, second = runs_of(rng), runs_of(rng)
    ours = Partial(SPEC, 3_600)
    assert add_runs(ours, first) and add_runs(ours, second)
    assert summary(ours) == summary(by_lists(first + second))


def test_a_telemax_segment_takes_the_numpy_path_and_matches_its_readings_one_by_one() -> None:
    from consumer.feeds import FEEDS

    spec = FEEDS["telemax"].insights
    assert spec is not None
    feed = FEEDS["telemax"]
    readings = [orjson.dumps(r) for r, _ in records("telemax", 500, seed=2)]
    items = [feed.to_item(data) for data in readings]
    positions = [(str(100 + n), 0) for n in range(len(items))]
    arrivals = [None] * len(items)
    kept = batch_facts(spec, items, positions, arrivals)
    entries = [Entry(p, "", b"", fact=kept) for p in positions[7:480]]
    ours, theirs = Partial(spec), Partial(spec)
    assert add_runs(Partial(spec), [(kept, 7, 480)])
    add_segment(ours, entries)
    theirs.add_all(zip(items[7:480], arrivals[7:480], strict=True))
    assert ours.cells and summary(ours) == summary(theirs)
