"""A measure's statistics: the bins added in one pass are the library's own, value by value."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

from consumer.insights import stats
from consumer.insights.stats import Stat, new_sketch


def library_bins(values: list[float]) -> tuple[dict[int, float], dict[int, float], float]:
    """What ``DDSketch.add`` keeps, one value at a time."""
    sketch: Any = new_sketch()
    for value in values:
        sketch.add(value)

    def bins(store: Any) -> dict[int, float]:
        return {store.offset + i: w for i, w in enumerate(store.bins) if w}

    return bins(sketch._store), bins(sketch._negative_store), sketch._zero_count


@pytest.mark.parametrize("seed", range(4))
def test_values_added_at_once_fill_the_bins_the_library_fills_one_by_one(seed: int) -> None:
    rng = random.Random(seed)
    values = [f"{rng.lognormvariate(2, 2):.2f}" for _ in range(2_000)]
    if seed % 2:  # negative values and zeros too
        values += [f"-{rng.uniform(0, 500):.3f}" for _ in range(500)] + ["0", "0.00"]
    stat = Stat()
    stat.add_all(values[:700])  # in two passes, as a cell read in between
    stat.add_all(Decimal(v) for v in values[700:])
    positive, negative, zeros = library_bins([float(v) for v in values])
    assert (dict(stat.positive), dict(stat.negative), stat.zeros) == (positive, negative, zeros)
    decimals = [Decimal(v) for v in values]
    assert (stat.count, stat.total, stat.low, stat.high) == (
        len(values), sum(decimals), min(decimals), max(decimals)
    )  # fmt: skip
    whole: Any = new_sketch()
    for value in values:
        whole.add(float(value))
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        assert stat.quantile(q) == whole.get_quantile_value(q)


def test_a_value_that_is_not_a_number_is_skipped_as_a_missing_one() -> None:
    stat = Stat()
    stat.add_all(["1.5", "abc", "2.5"])
    assert (stat.count, stat.total) == (2, Decimal("4.0"))
    empty = Stat()
    empty.add_all(["x"])
    assert (empty.count, empty.low, empty.quantile(0.5)) == (0, None, None)


def test_a_missing_value_is_skipped_and_the_rest_counted_as_without_it() -> None:
    with_missing, without = Stat(), Stat()
    with_missing.add_all(["1.5", None, "2.25", None])
    without.add_all(["1.5", "2.25"])
    assert with_missing == without
    assert (with_missing.count, with_missing.total) == (2, Decimal("3.75"))
    empty = Stat()
    empty.add_all([None, None])
    assert (empty.count, empty.low) == (0, None)


def test_the_encoding_round_trips_and_merges_as_the_union() -> None:
    a, b = Stat(), Stat()
    a.add_all(["3.25", "-1", "0", "700.5"])
    b.add_all(["2", "2", "9.75"])
    decoded = Stat.decode(orjson.loads(orjson.dumps(a.encode())))
    assert decoded == a
    decoded.merge(Stat.decode(orjson.loads(orjson.dumps(b.encode()))))
    union = Stat()
    union.add_all(["3.25", "-1", "0", "700.5", "2", "2", "9.75"])
    assert decoded == union


def literals(rng: random.Random) -> list[str]:
    """Decimal literals of every shape a number attribute may hold, and some only Decimal
    reads (they must take the value-by-value path)."""
    shapes = [
        lambda: repr(rng.uniform(-1e6, 1e6)),
        lambda: repr(rng.lognormvariate(0, 30)),  # 1e-40 .. 1e40: exponents
        lambda: f"{rng.uniform(0, 100):.{rng.randrange(0, 18)}f}",
        lambda: str(rng.randrange(-(10**25), 10**25)),  # beyond 64 bits
        lambda: (
            f"{rng.randrange(1, 10)}.{rng.randrange(10**16, 10**17)}E{rng.randrange(-120, 120)}"
        ),
        lambda: rng.choice(["0", "-0", "0.0", "1E+5", "-2.50e-3", "123456789012345678901"]),
    ]
    odd = ["1_000", " 7.5", ".5", "5.", "+5", "Infinity"]  # Decimal reads them, JSON not
    found = [rng.choice(shapes)() for _ in range(rng.randrange(1, 400))]
    if rng.random() < 0.3:
        found[rng.randrange(len(found))] = rng.choice(odd)
    return found


@pytest.mark.parametrize("seed", range(30))
def test_floats_read_at_once_are_each_literals_own(seed: int) -> None:
    """A cell's values become floats in one JSON parse when every one is a JSON number: the
    bins, and every figure, are those of ``float`` of each literal."""
    values = literals(random.Random(seed))
    stat = Stat()
    stat.add_all(values)
    finite = [v for v in values if v != "Infinity"]  # skipped, as a value that is none
    positive, negative, zeros = library_bins([float(v) for v in finite])
    assert (dict(stat.positive), dict(stat.negative), stat.zeros) == (positive, negative, zeros)
    assert (stat.count, stat.total) == (len(finite), sum(Decimal(v) for v in finite))


def test_infinities_nans_and_numbers_beyond_a_float_are_skipped_not_fatal() -> None:
    stat = Stat()
    stat.add_all(["1.5", "Infinity", "-Infinity", "NaN", "sNaN", "1E400", "2.5"])
    assert (stat.count, stat.total, stat.low, stat.high) == (
        2, Decimal("4.0"), Decimal("1.5"), Decimal("2.5")
    )  # fmt: skip


def plain_literals(rng: random.Random) -> list[str]:
    """Plain decimal strings (no exponent) of a cell: up to six places, trailing zeros,
    negative values, zeros of either sign, magnitudes up to a trillion (within the float
    grid: 35 values * 10^(digits before and after the point) < 2^49)."""
    places = rng.randrange(0, 7)
    scale = 10 ** rng.randrange(0, 13 - places)
    found = [f"{rng.uniform(-scale, scale):.{rng.randrange(0, places + 1)}f}" for _ in range(30)]
    found += rng.choices(["0", "-0", "0.00", "-0.0", "1.50", "1.5", f"{scale}.000"], k=5)
    rng.shuffle(found)
    return found[: rng.randrange(1, len(found) + 1)]


def figures(stat: Stat) -> tuple[int, str, str, str]:
    return stat.count, str(stat.total), str(stat.low), str(stat.high)


@pytest.mark.parametrize("seed", range(40))
def test_plain_values_read_as_floats_give_decimal_arithmetics_figures(seed: int) -> None:
    """Plain decimal strings are summed and ordered as floats (no Decimal a value): the
    count, the sum, the least and the greatest are Decimal arithmetic's to the exponent (a
    sum's string keeps the most places: "4.00"), and the first least / greatest string is
    the one kept, as ``min`` of Decimals keeps it."""
    values = plain_literals(random.Random(seed))
    assert stats._plain(values) is not None  # (the float path is the one under test)
    stat = Stat()
    stat.add_all(values)
    decimals = [Decimal(v) for v in values]
    exact = (len(values), str(sum(decimals, Decimal(0))), str(min(decimals)), str(max(decimals)))
    assert figures(stat) == exact
    positive, negative, zeros = library_bins([float(v) for v in values])
    assert (dict(stat.positive), dict(stat.negative), stat.zeros) == (positive, negative, zeros)


@pytest.mark.parametrize(
    "values",
    [
        ["0.1", "123456789012345.5"],  # a grid too wide for a float's sum
        ["0." + "0" * 400 + "1", "1"],  # more places than a float power of ten holds
        ["1e3", "2"],  # an exponent
        ["01.5", "2"],  # not JSON's syntax
        ["1,5", "2"],  # a separator inside a value
    ],
)
def test_values_off_the_float_grid_are_added_as_decimals(values: list[str]) -> None:
    assert stats._plain(values) is None
    stat = Stat()
    stat.add_all(values)
    decimals = [Decimal(v) for v in values if v != "1,5"]
    assert figures(stat)[:2] == (len(decimals), str(sum(decimals, Decimal(0))))


def test_equal_values_keep_the_first_ones_string_and_zeros_sum_to_a_positive_zero() -> None:
    a, b, zeros = Stat(), Stat(), Stat()
    a.add_all(["2", "1.50", "1.5", "2.0"])
    b.add_all(["1.5", "1.50", "2.0", "2"])
    zeros.add_all(["-0", "-0.0"])
    assert figures(a) == (4, "7.00", "1.50", "2")
    assert figures(b) == (4, "7.00", "1.5", "2.0")
    assert figures(zeros) == (2, "0.0", "-0", "-0")


def test_a_large_cell_on_the_grids_edge_sums_exactly() -> None:
    """A thousand values of tens of billions with a place each, near the grid's bound: a
    float sum added one by one drifts by more than half a tenth (in 5 of 20 such cells), the
    float path's ``fsum`` does not."""
    rng = random.Random(5)
    for _ in range(20):
        values = [
            f"{rng.randrange(4 * 10**10, 5 * 10**10)}.{rng.randrange(10)}" for _ in range(1000)
        ]
        assert stats._plain(values) is not None
        stat = Stat()
        stat.add_all(values)
        assert str(stat.total) == str(sum(Decimal(v) for v in values))
