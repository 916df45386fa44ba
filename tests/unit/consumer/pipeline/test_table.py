"""The tables' wire: an item's identity is its key, the last version of a key is kept, a
batch goes in chunks of 25."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.pipeline.sink import KEYLESS
from consumer.pipeline.table import (
    MAX_BATCH_ITEMS,
    chunks,
    dedupe,
    table_identities,
    table_identity,
)
from kernel.handlers import Item

KEYS = ("hardwareID", "Timestamp")


def item(n: int, value: str = "v", ts: str = "2026-01-01T00:00:00Z") -> Item:
    return {"hardwareID": {"S": f"HW-{n:04d}"}, "Timestamp": {"S": ts}, "Data1": {"S": value}}


def items(count: int) -> list[Item]:
    return [item(n) for n in range(count)]


def test_dedupe_keeps_last_value_per_key() -> None:
    batch = [item(1, "old"), item(2, "only"), item(1, "new"), item(1, "newest")]
    assert dedupe(batch, KEYS)[0] == [item(1, "newest"), item(2, "only")]


def test_dedupe_uses_every_key_attribute() -> None:
    a = item(1, ts="2026-01-01T00:00:00Z")
    b = item(1, ts="2026-01-01T00:00:01Z")
    assert dedupe([a, b], KEYS)[0] == [a, b]
    assert dedupe([a, b], ("hardwareID",))[0] == [b]


ODD_ITEMS: list[Any] = [
    {"hardwareID": {"S": "a"}, "Timestamp": {"S": "t"}},
    {"hardwareID": {"N": "1"}, "Timestamp": {"S": "t"}, "x": {"S": "y"}},
    {"hardwareID": {"B": b"\x00"}, "Timestamp": {"S": "t"}},
    {"hardwareID": {"S": "a"}},  # no range key
    {"hardwareID": {}, "Timestamp": {"S": "t"}},  # an attribute of no type
    {"hardwareID": "a", "Timestamp": {"S": "t"}},  # not an attribute value
    {},
]


@pytest.mark.parametrize("names", [("hardwareID", "Timestamp"), ("hardwareID",), ("a", "b", "c")])
@pytest.mark.parametrize("cut", [1, 3, len(ODD_ITEMS)])
def test_a_batchs_identities_are_its_items_one_by_one(names: tuple[str, ...], cut: int) -> None:
    """The batch path (one comprehension) and the item path agree, the keyless included:
    all well-keyed, or some not (then the batch path falls back item by item)."""
    items = ODD_ITEMS[:cut]
    expected: list[Any] = []
    for one in items:
        try:
            expected.append(table_identity(one, names))
        except KeyError:
            expected.append(KEYLESS)
    assert table_identities(items, names) == expected
    assert any(found is not KEYLESS for found in table_identities(ODD_ITEMS, names)) or (
        names == ("a", "b", "c")
    )


def test_dedupe_refuses_the_keyless_and_keeps_the_rest() -> None:
    batch = [ODD_ITEMS[0], ODD_ITEMS[3], ODD_ITEMS[0], ODD_ITEMS[4], ODD_ITEMS[5]]
    kept, refused = dedupe(batch, KEYS)  # (an attribute of no type once raised RuntimeError)
    assert kept == [ODD_ITEMS[0]]
    assert [(r.position, r.reason) for r in refused] == [
        (1, "missing_key"),
        (3, "missing_key"),
        (4, "missing_key"),
    ]


def test_dedupe_empty() -> None:
    assert dedupe([], KEYS)[0] == []


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        pytest.param(0, [], id="none"),
        pytest.param(1, [1], id="one"),
        pytest.param(25, [25], id="exactly-one-batch"),
        pytest.param(26, [25, 1], id="one-over"),
        pytest.param(60, [25, 25, 10], id="sixty"),
    ],
)
def test_chunks(count: int, sizes: list[int]) -> None:
    batch = items(count)
    parts = chunks(batch)
    assert [len(p) for p in parts] == sizes
    assert [i for part in parts for i in part] == batch
    assert MAX_BATCH_ITEMS == 25


def test_chunks_custom_size() -> None:
    assert [len(p) for p in chunks(items(7), 3)] == [3, 3, 1]
