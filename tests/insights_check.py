"""The insights as ``insights --format json`` prints them, compared with a recomputation from
scratch over the records the stream held (issue 14): counts, late counts, sums, minima and
maxima exactly equal, quantiles within the sketch's relative bound."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from consumer.feeds import FEEDS
from consumer.insights.cells import CellKey, Partial
from consumer.insights.report import QUANTILES, iso
from consumer.insights.stats import ALPHA
from tests.support import Stack


def recompute(
    feed: str, records: Sequence[dict[str, Any]], arrivals: Sequence[float], lateness_s: float
) -> tuple[Partial, dict[tuple[CellKey, str], list[Decimal]]]:
    """The cells of ``records`` (the i-th arrived at ``arrivals[i]``), and each cell's measured
    values of the records it counted (for the true quantiles)."""
    spec = FEEDS[feed].insights
    assert spec is not None
    expected = Partial(spec, lateness_s)
    values: dict[tuple[CellKey, str], list[Decimal]] = defaultdict(list)
    for record, arrived in zip(records, arrivals, strict=True):
        item = FEEDS[feed].to_item(orjson.dumps(record))
        expected.add(item, arrived)
        when = plain_time(item.get(spec.time_field, {}).get("S", ""))
        if when is None:
            continue
        start = int(when // spec.window_s) * spec.window_s
        if arrived > start + spec.window_s + lateness_s:
            continue  # late: counted as such, not aggregated
        for measure in spec.measures:
            value = measure.value(item)
            if value is not None:
                values[((start, spec.group_of(item)), measure.name)].append(value)
    return expected, values


def plain_time(text: str) -> float | None:
    """Epoch seconds of an ISO-8601 time, parsed plainly (not the worker's memoised way)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def stream_arrivals(stack: Stack, records: Sequence[dict[str, Any]]) -> list[float]:
    """Each record's arrival time as the stream stamped it (``ApproximateArrivalTimestamp``,
    what the worker judges lateness by), found by its bytes: the n-th of equal records takes
    the n-th earliest stamp of those bytes. Not a time the test took around its puts: the
    machine's wall clock can step between the two (seen twice in CI, 2026-12-06: the stream's
    stamps 301 to 305 s after such a time, in a test bounded at 150 s)."""
    stamps: dict[bytes, list[float]] = defaultdict(list)
    for record in stack.stream_records():
        stamps[record["Data"]].append(record["ApproximateArrivalTimestamp"].timestamp())
    waiting = {data: deque(sorted(times)) for data, times in stamps.items()}
    arrivals = []
    for record in records:
        data = orjson.dumps(record)
        assert waiting.get(data), ("a record the test put is not in the stream", record)
        arrivals.append(waiting[data].popleft())
    return arrivals


def read_insights(
    stack: Stack, feed: str, since: datetime, until: datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows ``insights --format json`` prints, by (window, group as JSON); numbers exact."""
    done = stack.cli(
        "consumer", "insights", "--feed", feed, "--format", "json",
        "--from", since.isoformat(), "--to", until.isoformat(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line, parse_float=Decimal) for line in done.stdout.splitlines()]
    return {(row["window"], json.dumps(row["group"], sort_keys=True)): row for row in rows}


def check_insights_exact(
    stack: Stack,
    feed: str,
    records: Sequence[dict[str, Any]],
    lateness_s: float,
    since: datetime,
    until: datetime,
) -> int:
    """Compare what the table holds for [since, until) with a recomputation over
    ``records`` (each as the stream holds it: its arrival stamp); returns how many of them
    were late (counted, not aggregated)."""
    expected, values = recompute(feed, records, stream_arrivals(stack, records), lateness_s)
    found = read_insights(stack, feed, since, until)
    keys = {
        (iso(start), json.dumps(dict(group), sort_keys=True)) for start, group in expected.cells
    }
    assert set(found) == keys, "the same windows and groups"
    for (start, group), cell in expected.cells.items():
        row = found[(iso(start), json.dumps(dict(group), sort_keys=True))]
        due = (cell.count, cell.late)
        assert (row["count"], row["late"]) == due, ("(count, late) due", due, "found", row)
        assert row["window_s"] == expected.spec.window_s
        for name, stat in cell.stats.items():
            assert row[f"{name}_count"] == stat.count, (name, row)
            assert Decimal(row[f"{name}_sum"]) == stat.total, ("sums exactly equal", name, row)
            assert (
                Decimal(row[f"{name}_min"]) == stat.low and Decimal(row[f"{name}_max"]) == stat.high
            )
            true_values = sorted(values[((start, group), name)])
            assert len(true_values) == stat.count
            for label, q in QUANTILES:
                true = float(true_values[int(q * (len(true_values) - 1))])
                got = float(row[f"{name}_{label}"])
                assert abs(got - true) <= ALPHA * abs(true) + 1e-9, (name, label, row)
    return sum(cell.late for cell in expected.cells.values())
