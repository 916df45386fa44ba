"""One measure's mergeable statistics: count, sum, min and max exactly, quantiles from a
DDSketch (the ``ddsketch`` library, DataDog's reference implementation).

Exactness: counts are integers and sums are :class:`~decimal.Decimal` (the values are the
records' own decimal numbers), so merging partial results in any order gives exactly the sum
a recomputation gives. (A cell's plain values — ``12.5``, no exponent, on a grid a float
holds — are summed and ordered as floats, which there gives Decimal's figures exactly: see
:func:`_plain`.) Quantiles: a DDSketch with relative accuracy ``ALPHA`` answers a value
within ``ALPHA`` (1 %) of the true quantile's — relative to the value, for positive and
negative values alike — and merging two sketches gives the sketch of the union (bin counts add
up), so the bound holds for any split of the records into partials.

Speed: the writer keeps the sketch's bins as counters (bin key → count), the keys from the
library's logarithmic mapping (with ``log2``: :class:`Log2Mapping`), and adds a cell's values
in one pass when the cell is read (:meth:`Stat.add_all`): one ``DDSketch.add`` per value cost
8 µs of the 20 µs a TELEMAX reading cost to aggregate (measured, 60,000 readings). The
library's sketch answers the quantiles (:meth:`Stat.sketch`), from exactly the bins it would
have kept itself — a test holds the two equal.

Encoding (for DynamoDB items and JSON): ``{"n", "s", "lo", "hi", "z", "p", "m"}`` — count,
sum (a decimal string), min, max, the zero count, and the positive and negative bins as
``[key, count, key, count, …]`` in key order.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import orjson
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.mapping import LogarithmicMapping
from ddsketch.store import DenseStore

ALPHA = 0.01  # relative accuracy of every quantile


class Log2Mapping(LogarithmicMapping):
    """The library's logarithmic mapping with ``math.log2`` (twice as fast as its
    ``math.log(value, 2)``, and as exact): the same bins but for a last-bit difference at a
    bin's edge, where either bin is within the bound."""

    def _log_gamma(self, value: float) -> float:
        return math.log2(value) * self._multiplier


_MAPPING = Log2Mapping(ALPHA)
_MULTIPLIER, _OFFSET, _TINY = _MAPPING._multiplier, _MAPPING._offset, _MAPPING.min_possible


def new_sketch() -> BaseDDSketch:
    """An empty sketch of the library with this module's mapping."""
    return BaseDDSketch(
        mapping=Log2Mapping(ALPHA), store=DenseStore(), negative_store=DenseStore(), zero_count=0.0
    )


def _count_here(into: dict[int, int], keys: Iterable[int]) -> None:
    for key in keys:
        into[key] = into.get(key, 0) + 1


# Counter's own counting loop (C) on a plain dict, where there is one: a Counter costs 2 µs
# to make and update, and each cell has a few
_count: Callable[[dict[int, int], Iterable[int]], None] = getattr(
    collections, "_count_elements", _count_here
)

# ``Log2Mapping.key`` is int(ceil(log2(v) * multiplier) + offset): with no offset, the ceiling
# alone (an int already), inlined in Stat.add_all — the same float operations, the same key
assert _OFFSET == 0


@dataclasses.dataclass(slots=True)
class Stat:
    count: int = 0
    total: Decimal = Decimal(0)
    low: Decimal | None = None
    high: Decimal | None = None
    positive: dict[int, int] = dataclasses.field(default_factory=dict)  # bin key -> count
    negative: dict[int, int] = dataclasses.field(default_factory=dict)
    zeros: int = 0

    def add(self, value: Decimal) -> None:
        self.add_all((value,))

    def add_all(self, values: Iterable[Decimal | str | None]) -> None:
        """Add decimal values (or their strings; None, missing, is skipped, and so is one that
        is not a finite number within a float's range: DynamoDB's numbers stay within
        1E+126, and an infinity or a NaN has no bin — it stopped the commit with an error)."""
        listed = values if isinstance(values, list) else list(values)
        plain = _plain(listed)  # (None if a value is missing: then the general path)
        if plain is not None:
            floats, least, total, low, high = plain
        else:
            found, floats = _readable([value for value in listed if value is not None])
            if not found:
                return
            least = min(floats)
            total, low, high = sum(found, Decimal(0)), min(found), max(found)
        self.count += len(floats)
        self.total += total
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        ceil, log2, multiplier = math.ceil, math.log2, _MULTIPLIER  # the mapping's key, inlined
        # (the least float, not the Decimal: a Decimal compared with _TINY reads the float
        # exactly, 750 digits, 3.3 µs a call)
        if least > _TINY:  # the common case: every value positive
            _count(self.positive, [ceil(log2(f) * multiplier) for f in floats])
            return
        _count(self.positive, [ceil(log2(f) * multiplier) for f in floats if f > _TINY])
        _count(self.negative, [ceil(log2(-f) * multiplier) for f in floats if f < -_TINY])
        self.zeros += sum(1 for f in floats if -_TINY <= f <= _TINY)

    def merge(self, other: Stat) -> None:
        if not other.count:
            return
        self.count += other.count
        self.total += other.total
        assert other.low is not None and other.high is not None
        self.low = other.low if self.low is None else min(self.low, other.low)
        self.high = other.high if self.high is None else max(self.high, other.high)
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for key, weight in theirs.items():
                mine[key] = mine.get(key, 0) + weight
        self.zeros += other.zeros

    @property
    def mean(self) -> Decimal | None:
        return self.total / self.count if self.count else None

    def sketch(self) -> BaseDDSketch:
        """The library's sketch of these values (its stores filled from the bins)."""
        sketch: Any = new_sketch()
        for key, weight in self.positive.items():
            sketch._store.add(key, weight)
        for key, weight in self.negative.items():
            sketch._negative_store.add(key, weight)
        sketch._zero_count = float(self.zeros)
        sketch._count = float(self.count)
        sketch._sum = float(self.total)
        if self.count:
            sketch._min, sketch._max = float(self.low or 0), float(self.high or 0)
        return sketch  # type: ignore[no-any-return]

    def quantile(self, q: float) -> float | None:
        value: float | None = self.sketch().get_quantile_value(q) if self.count else None
        return value

    def encode(self) -> dict[str, Any]:
        return {
            "n": self.count,
            "s": str(self.total),
            "lo": None if self.low is None else str(self.low),
            "hi": None if self.high is None else str(self.high),
            "z": self.zeros,
            "p": _flat(self.positive),
            "m": _flat(self.negative),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> Stat:
        return cls(
            count=int(data["n"]),
            total=Decimal(data["s"]),
            low=None if data["lo"] is None else Decimal(data["lo"]),
            high=None if data["hi"] is None else Decimal(data["hi"]),
            positive=_bins(data["p"]),
            negative=_bins(data["m"]),
            zeros=int(data["z"]),
        )


def _plain(
    values: Sequence[Decimal | str | None],
) -> tuple[list[float], float, Decimal, Decimal, Decimal] | None:
    """(floats, the least float, sum, min, max) of values that are all plain decimal strings
    (JSON's syntax, no exponent: ``-12.5``, ``700``) on a grid fine and narrow enough for a
    float — every value ``m`` * 10^-k, k <= 22, with ``n`` * max|value| * 10^k < 2^49 —,
    without a Decimal a value; None otherwise. (A cell's values cost 0.35 µs each to add as
    Decimals.)

    The same figures as Decimal arithmetic, to the last digit and exponent: on such a grid
    distinct values are floats many ulps apart, in the same order (min and max are the first
    least and greatest strings, as ``min`` of the Decimals finds); ``fsum`` of the floats is
    within n * max|value| * 2^-52 of the exact sum, so the sum times 10^k (exact up to 22) is
    within 1/8 + 1/16 of the sum's integer on the grid, and rounding it gives that integer,
    scaled back with the exponent Decimal addition gives (the least of the values' and 0)."""
    try:
        joined = ",".join(values)  # type: ignore[arg-type]
    except TypeError:  # a Decimal (or a None) among them
        return None
    if joined.count(",") != len(values) - 1 or not _PLAIN_CHARACTERS(joined):
        return None
    try:  # (JSON's syntax: no "01", "1.", ".5", "-"; with a comma a value, one number each)
        floats: list[float] = orjson.loads("[" + joined + "]")
    except orjson.JSONDecodeError:
        return None
    least, most = min(floats), max(floats)
    places = _places(joined)
    if places > 22 or len(floats) * max(-least, most) * 10.0**places >= 2.0**49:
        return None
    # (round() gives an int: a zero sum is 0 as Decimal's, never -0)
    total = Decimal(round(math.fsum(floats) * 10.0**places)).scaleb(-places)
    low, high = floats.index(least), floats.index(most)
    texts = cast("Sequence[str]", values)  # (all strings: they joined)
    return floats, least, total, Decimal(texts[low]), Decimal(texts[high])


# digits, points, minus signs and the commas between: no exponent, no "Infinity" (a regex of
# the numbers' syntax cost 0.09 µs a value, this 0.01; JSON's parse checks the syntax)
_PLAIN_CHARACTERS = re.compile(r"[-.,0-9]*").fullmatch


def _places(joined: str) -> int:
    """The most digits after the point of any number in ``joined`` (a few regex scans)."""
    places = 0
    while _with_places(places + 1)(joined):
        places += 1
    return places


@functools.cache
def _with_places(places: int) -> Callable[[str], re.Match[str] | None]:
    return re.compile(rf"\.[0-9]{{{places}}}").search


def _readable(values: list[Decimal | str]) -> tuple[list[Decimal], list[float]]:
    """The values (as Decimals, and floats) that are finite numbers a float holds."""
    try:
        found = list(map(Decimal, values))
        total = sum(found, Decimal(0))  # a NaN or an infinity leaves it not finite
        floats = _floats(values)
        if total.is_finite() and -math.inf < min(floats) and max(floats) < math.inf:
            return found, floats
    except (InvalidOperation, ValueError):  # (ValueError: none at all, too)
        pass
    found = [number for number in map(_decimal, values) if number is not None]
    return found, [float(number) for number in found]


def _decimal(text: Decimal | str) -> Decimal | None:
    """The value, if it is a finite number a float holds (else None: skipped)."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() and math.isfinite(float(number)) else None


def _floats(values: list[Decimal | str]) -> list[float]:
    """``float`` of each, read as one JSON array when every value is a literal JSON reads
    (orjson: 0.05 µs a value against 0.24 for ``float`` of each; the same floats, a test
    holds it); each on its own otherwise (a Decimal among them, ``.5``, ``1_000``, …)."""
    try:
        parsed: list[float] = orjson.loads("[" + ",".join(values) + "]")  # type: ignore[arg-type]
    except (TypeError, orjson.JSONDecodeError):
        return [float(value) for value in values]
    return parsed if len(parsed) == len(values) else [float(value) for value in values]


def _flat(bins: dict[int, int]) -> list[int]:
    """``[key, count, key, count, …]`` in key order, filled by two slice assignments (half
    the cost of a comprehension over the keys: 13.6 against 27.7 µs for 239 bins)."""
    keys = sorted(bins)
    flat = keys + keys
    flat[1::2] = map(bins.__getitem__, keys)
    flat[::2] = keys
    return flat


def _bins(encoded: Sequence[int]) -> dict[int, int]:
    pairs = iter(encoded)
    return {int(key): int(weight) for key, weight in zip(pairs, pairs, strict=True)}
