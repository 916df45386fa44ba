"""A measure's statistics: the bins added in one pass are the library's own, value by value."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import orjson
import pytest

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
