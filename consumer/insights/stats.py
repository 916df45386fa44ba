"""One measure's mergeable statistics: count, sum, min and max exactly, quantiles from a
DDSketch (the ``ddsketch`` library, DataDog's reference implementation).

Exactness: counts are integers and sums are :class:`~decimal.Decimal` (the values are the
records' own decimal numbers), so merging partial results in any order gives exactly the sum
a recomputation gives. Quantiles: a DDSketch with relative accuracy ``ALPHA`` answers a value
within ``ALPHA`` (1 %) of the true quantile's — relative to the value, for positive and
negative values alike — and merging two sketches gives the sketch of the union (bin counts add
up), so the bound holds for any split of the records into partials.

Encoding (for DynamoDB items and JSON): ``{"n", "s", "lo", "hi", "z", "p", "m"}`` — count,
sum (a decimal string), min, max, the zero count, and the positive and negative stores as
``[first key, count, count, …]`` (dense bins: what the sketch keeps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ddsketch import DDSketch
from ddsketch.store import DenseStore

ALPHA = 0.01  # relative accuracy of every quantile


def new_sketch() -> DDSketch:
    return DDSketch(relative_accuracy=ALPHA)


@dataclasses.dataclass
class Stat:
    count: int = 0
    total: Decimal = Decimal(0)
    low: Decimal | None = None
    high: Decimal | None = None
    sketch: DDSketch = dataclasses.field(default_factory=new_sketch)

    def add(self, value: Decimal) -> None:
        self.count += 1
        self.total += value
        if self.low is None or value < self.low:
            self.low = value
        if self.high is None or value > self.high:
            self.high = value
        self.sketch.add(float(value))

    def merge(self, other: Stat) -> None:
        if not other.count:
            return
        self.count += other.count
        self.total += other.total
        assert other.low is not None and other.high is not None
        self.low = other.low if self.low is None else min(self.low, other.low)
        self.high = other.high if self.high is None else max(self.high, other.high)
        self.sketch.merge(other.sketch)

    @property
    def mean(self) -> Decimal | None:
        return self.total / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        value: float | None = self.sketch.get_quantile_value(q) if self.count else None
        return value

    def encode(self) -> dict[str, Any]:
        sketch: Any = self.sketch
        return {
            "n": self.count,
            "s": str(self.total),
            "lo": None if self.low is None else str(self.low),
            "hi": None if self.high is None else str(self.high),
            "z": sketch._zero_count,  # the library keeps its stores as attributes
            "p": _bins(sketch._store),
            "m": _bins(sketch._negative_store),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Stat:
        sketch: Any = new_sketch()
        _fill(sketch._store, data["p"])
        _fill(sketch._negative_store, data["m"])
        sketch._zero_count = float(data["z"])
        stat = cls(
            count=int(data["n"]),
            total=Decimal(data["s"]),
            low=None if data["lo"] is None else Decimal(data["lo"]),
            high=None if data["hi"] is None else Decimal(data["hi"]),
            sketch=sketch,
        )
        count = sketch._negative_store.count + sketch._zero_count + sketch._store.count
        sketch._count = count
        sketch._sum = float(stat.total)
        if stat.count:
            sketch._min, sketch._max = float(stat.low or 0), float(stat.high or 0)
        return stat


def _bins(store: DenseStore) -> list[float]:
    if not store.count:
        return []
    first = store.min_key
    used = store.bins[first - store.offset : store.max_key - store.offset + 1]
    return [first, *used]


def _fill(store: DenseStore, encoded: Sequence[float]) -> None:
    if not encoded:
        return
    first = int(encoded[0])
    for index, weight in enumerate(encoded[1:]):
        if weight:
            store.add(first + index, weight)
