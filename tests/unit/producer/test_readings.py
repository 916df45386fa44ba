"""Generated TELEMAX readings: unique keys, ISO-8601 timestamps, deterministic."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone

from producer.readings import iso_micro, readings

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def test_keys_are_unique() -> None:
    batch = list(readings(3000, devices=7, seed=3, start=START))
    assert len(batch) == 3000
    assert len({(r["hardwareID"], r["Timestamp"]) for r in batch}) == 3000


def test_timestamps_are_iso8601_utc_with_microseconds() -> None:
    for reading in readings(200, devices=5, seed=1, start=START):
        assert ISO.match(reading["Timestamp"]), reading["Timestamp"]
        moment = datetime.fromisoformat(reading["Timestamp"])
        assert moment.utcoffset() == timedelta(0)


def test_timestamps_strictly_increase_per_device_one_second_apart() -> None:
    per_device: dict[str, list[datetime]] = defaultdict(list)
    for reading in readings(500, devices=10, seed=9, start=START):
        per_device[reading["hardwareID"]].append(datetime.fromisoformat(reading["Timestamp"]))
    assert len(per_device) == 10
    for times in per_device.values():
        assert len(times) == 50
        assert all(a < b for a, b in itertools.pairwise(times))
        for tick, moment in enumerate(times):
            assert START + timedelta(seconds=tick) <= moment < START + timedelta(seconds=tick + 1)


def test_round_robin_device_ids() -> None:
    ids = [r["hardwareID"] for r in readings(7, devices=3, seed=0, start=START)]
    assert ids == [
        "HW-000000",
        "HW-000001",
        "HW-000002",
        "HW-000000",
        "HW-000001",
        "HW-000002",
        "HW-000000",
    ]


def test_deterministic_with_seed_and_start() -> None:
    first = list(readings(100, devices=4, seed=42, start=START))
    assert first == list(readings(100, devices=4, seed=42, start=START))
    assert first != list(readings(100, devices=4, seed=43, start=START))


def test_fields_and_ranges() -> None:
    links: dict[str, str] = {}
    for reading in readings(400, devices=20, seed=5, start=START):
        assert set(reading) == {"hardwareID", "Timestamp", "Data1", "Data2", "Data3"}
        assert re.fullmatch(r"LNK-\d{4}", reading["Data1"])
        assert links.setdefault(reading["hardwareID"], reading["Data1"]) == reading["Data1"]
        assert 5.0 <= reading["Data2"] <= 950.0
        assert reading["Data3"] > 0
        assert round(reading["Data2"], 2) == reading["Data2"]


def test_non_utc_start_is_written_in_utc() -> None:
    start = datetime(2026, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    (reading,) = readings(1, devices=1, seed=0, start=start)
    assert reading["Timestamp"].startswith("2026-03-01T12:00:00.")


def test_iso_micro() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert iso_micro(moment) == "2026-01-02T03:04:05.000006Z"
