"""Insights as machines and people read them: JSON lines, CSV, text tables and the charts."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from consumer.insights.cells import Partial
from consumer.insights.plot import DPI, SIZE_IN, render
from consumer.insights.report import as_csv, as_json_lines, by_hour_of_day, rows, text_report
from consumer.insights.windows import InsightSpec, field
from kernel.errors import ConfigError

SPEC = InsightSpec(
    window_s=3600, time_field="at", group_fields=("zone",), measures=(field("fare"),)
)


def known_partial() -> Partial:
    """Three zones over a day, busiest at 18:00 (a known data set)."""
    partial = Partial(SPEC)
    for hour in range(24):
        trips = 30 if hour == 18 else 10 if hour == 8 else 2
        for n in range(trips):
            at = datetime(2026, 12, 2, hour, n % 60, tzinfo=UTC).isoformat()
            item = {"at": {"S": at}, "zone": {"N": str(n % 3)}, "fare": {"N": f"{5 + n}.25"}}
            partial.add(item, arrival=None)
    return partial


def test_json_lines_name_every_aggregate_and_keep_sums_exact() -> None:
    found = rows(SPEC, known_partial().cells)
    lines = [json.loads(line) for line in as_json_lines(found).splitlines()]
    assert len(lines) == len(found) == 22 * 2 + 3 + 3  # quiet hours see two zones
    first = lines[0]
    assert first["window"] == "2026-12-02T00:00:00Z" and first["window_s"] == 3600
    assert first["group"] == {"zone": 0}
    for stat in ("count", "sum", "mean", "min", "max", "p50", "p95", "p99"):
        assert f"fare_{stat}" in first, stat
    total = sum(Decimal(str(line["fare_sum"])) for line in lines)
    assert total == sum((Decimal(f"{5 + n}.25") for n in range(30)), Decimal(0)) + sum(
        (Decimal(f"{5 + n}.25") for n in range(10)), Decimal(0)
    ) + 22 * (Decimal("5.25") + Decimal("6.25"))


def test_peak_hours_rank_the_busiest_first_and_the_text_says_so() -> None:
    found = rows(SPEC, known_partial().cells)
    assert by_hour_of_day(found)[:2] == [(18, 30), (8, 10)]
    text = text_report(SPEC, found, "hour")
    assert text.splitlines()[0] == "peak hours (records, busiest first)"
    assert text.splitlines()[2].split() == ["18:00", "30"]
    assert "trend per window" in text
    assert "zone=0" in text_report(SPEC, found, "group")
    assert text_report(SPEC, found, "zone") == text_report(SPEC, found, "group").replace(
        "groups (records)", "zone (records)"
    )
    with pytest.raises(ConfigError, match="--by colour: one of hour, group, zone"):
        text_report(SPEC, found, "colour")
    csv_text = as_csv(found)
    assert csv_text.splitlines()[0].startswith("window,zone,window_s,count,late,fare_count")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_charts_are_a_png_of_the_expected_size(tmp_path: Path) -> None:
    found = rows(SPEC, known_partial().cells)
    (path,) = render(SPEC, found, tmp_path / "charts" / "taxi.png", "taxi")
    assert png_size(path) == (int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI))
    assert path.stat().st_size > 20_000, "not an empty canvas"


def test_no_rows_is_said_plainly() -> None:
    empty: list[dict[str, Any]] = []
    assert text_report(SPEC, empty, "hour") == "no insights in that range\n"
    assert as_csv(empty) == "" and as_json_lines(empty) == ""
