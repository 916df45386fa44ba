"""The floor writes what the worker writes: its entries are the ceiling's items, encoded."""

from __future__ import annotations

from typing import Any

import orjson

from tests.bench import ceiling
from tests.bench.ceiling import entries_of, items_of


def test_the_floors_entries_are_the_ceilings_items_as_the_encoder_writes_them() -> None:
    entries, items = entries_of(300), items_of(300)
    assert [orjson.loads(json) for _, json, _, _ in entries] == items
    # keyed by (hardwareID, Timestamp), as the sink checks a batch's keys
    assert [key for key, *_ in entries] == [
        (item["hardwareID"]["S"], item["Timestamp"]["S"]) for item in items
    ]


def test_entries_made_a_chunk_at_a_time_are_the_readings_in_order(monkeypatch: Any) -> None:
    whole = entries_of(30)  # one chunk
    monkeypatch.setattr(ceiling, "ENCODED_AT_ONCE", 7)  # five chunks, the last of two
    assert entries_of(30) == whole
