"""Insights as rows, JSON lines, CSV and text tables (pure).

A row is one window and group: ``window`` (ISO-8601 start, UTC), ``window_s``, ``group`` (the
grouping fields), ``count``, ``late``, and per measure ``<field>_<stat>`` for ``count``,
``sum``, ``mean``, ``min``, ``max``, ``p50``, ``p95``, ``p99`` — the format other tools read
(``--format json``: one JSON object per line).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from consumer.insights.cells import Cell, CellKey
from consumer.insights.windows import InsightSpec
from consumer.ops.render import text_table
from kernel.errors import ConfigError

QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
STATS = ("count", "sum", "mean", "min", "max", *(name for name, _ in QUANTILES))


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rows(
    spec: InsightSpec,
    cells: Mapping[CellKey, Cell],
    start: float | None = None,
    end: float | None = None,
) -> list[dict[str, Any]]:
    """Rows of the windows that start in [start, end), by window then group."""
    found = []
    for (window, group), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if (start is not None and window < start) or (end is not None and window >= end):
            continue
        row: dict[str, Any] = {
            "window": iso(window),
            "window_s": spec.window_s,
            "group": dict(group),
            "count": cell.count,
            "late": cell.late,
        }
        for measure in spec.measures:
            stat = cell.stats.get(measure.name)
            name = measure.name
            row[f"{name}_count"] = stat.count if stat else 0
            row[f"{name}_sum"] = stat.total if stat else Decimal(0)
            row[f"{name}_mean"] = stat.mean if stat else None
            row[f"{name}_min"] = stat.low if stat else None
            row[f"{name}_max"] = stat.high if stat else None
            for label, q in QUANTILES:
                row[f"{name}_{label}"] = stat.quantile(q) if stat else None
        found.append(row)
    return found


def _number(value: object) -> object:
    """Decimals as exact JSON numbers (a float would round a large sum)."""
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f").encode())
    raise TypeError(type(value).__name__)


def as_json_lines(found: Iterable[Mapping[str, Any]]) -> str:
    return "".join(
        orjson.dumps(row, default=_number, option=orjson.OPT_APPEND_NEWLINE).decode()
        for row in found
    )


def as_csv(found: Sequence[Mapping[str, Any]]) -> str:
    if not found:
        return ""
    out = io.StringIO()
    columns = [c for c in found[0] if c != "group"]
    group_fields = sorted({name for row in found for name in row["group"]})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["window", *group_fields, *columns[1:]])
    for row in found:
        writer.writerow(
            [row["window"], *(row["group"].get(g, "") for g in group_fields)]
            + [_plain(row[c]) for c in columns[1:]]
        )
    return out.getvalue()


def _plain(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return value


def by_hour_of_day(found: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(hour of day, records) over every window and group, busiest first: the peak hours."""
    hours: dict[int, int] = {}
    for row in found:
        hour = int(row["window"][11:13])
        hours[hour] = hours.get(hour, 0) + int(row["count"])
    return sorted(hours.items(), key=lambda kv: (-kv[1], kv[0]))


def by_window(spec: InsightSpec, found: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every group of a window merged in a trend row: count, late and each measure's sum and
    mean (the mean weighted by the groups' counts)."""
    windows: dict[str, dict[str, Any]] = {}
    for row in found:
        trend = windows.setdefault(row["window"], {"window": row["window"], "count": 0, "late": 0})
        trend["count"] += row["count"]
        trend["late"] += row["late"]
        for measure in spec.measures:
            name = measure.name
            trend[f"{name}_sum"] = trend.get(f"{name}_sum", Decimal(0)) + row[f"{name}_sum"]
            trend[f"{name}_count"] = trend.get(f"{name}_count", 0) + row[f"{name}_count"]
    for trend in windows.values():
        for measure in spec.measures:
            name = measure.name
            count = trend.pop(f"{name}_count")
            trend[f"{name}_mean"] = trend[f"{name}_sum"] / count if count else None
    return [windows[w] for w in sorted(windows)]


def group_field(spec: InsightSpec, by: str) -> str | None:
    """The grouping field ``--by`` names: ``group`` (all of them: None), a field's name, or
    its last word (``zone`` for ``pickupZone``), in any case; ConfigError otherwise."""
    if by == "group":
        return None
    for name in spec.group_fields:
        if by.lower() in (name.lower(), _last_word(name).lower()):
            return name
    choices = ", ".join(["hour", "group", *spec.group_fields])
    raise ConfigError(f"--by {by}: one of {choices}")


def _last_word(name: str) -> str:
    upper = [i for i, c in enumerate(name) if c.isupper()]
    return name[upper[-1] :] if upper else name


def text_report(spec: InsightSpec, found: Sequence[Mapping[str, Any]], by: str) -> str:
    """What a person reads: the peak hours ranked, then the trend per window (``by`` hour)
    or the groups ranked by their records (``by`` group, or one grouping field)."""
    field = None if by == "hour" else group_field(spec, by)
    if not found:
        return "no insights in that range\n"
    peak = [[f"{hour:02d}:00", str(count)] for hour, count in by_hour_of_day(found)]
    parts = ["peak hours (records, busiest first)", *text_table(["hour", "records"], peak), ""]
    if by != "hour":
        groups: dict[str, int] = {}
        for row in found:
            values = row["group"] if field is None else {field: row["group"].get(field)}
            label = ", ".join(f"{k}={v}" for k, v in values.items()) or "(all)"
            groups[label] = groups.get(label, 0) + int(row["count"])
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
        body = [[group, str(count)] for group, count in ranked]
        parts += [f"{field or 'groups'} (records)", *text_table(["group", "records"], body)]
    else:
        header = ["window", "records", "late"]
        for measure in spec.measures:
            header += [f"{measure.name} sum", f"{measure.name} mean"]
        table = []
        for trend in by_window(spec, found):
            line = [trend["window"], str(trend["count"]), str(trend["late"])]
            for measure in spec.measures:
                mean = trend[f"{measure.name}_mean"]
                line += [str(trend[f"{measure.name}_sum"]), "" if mean is None else f"{mean:.4f}"]
            table.append(line)
        parts += ["trend per window (all groups)", *text_table(header, table)]
    return "\n".join(parts) + "\n"
