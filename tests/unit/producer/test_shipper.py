"""Producer batching and pacing (PutRecords limits: 500 records, 5 MiB, 1 MiB per record)."""

from __future__ import annotations

import pytest

from kernel.kpl import MAX_RECORD_BYTES
from kernel.kpl.encode import Entry
from producer.shipper import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, batches

MIB = 1024 * 1024


def entries(count: int, size: int = 10, key: str = "k") -> list[Entry]:
    data = b"x" * (size - len(key))
    return [Entry(data, key) for _ in range(count)]


def test_limits() -> None:
    assert (MAX_BATCH_RECORDS, MAX_BATCH_BYTES, MAX_RECORD_BYTES) == (500, 5 * MIB, MIB)


def test_entry_size_counts_partition_key_bytes() -> None:
    assert Entry(b"abc", "é").size == 3 + 2


@pytest.mark.parametrize(
    ("count", "max_records", "sizes"),
    [
        pytest.param(0, 500, [], id="none"),
        pytest.param(1, 500, [1], id="one"),
        pytest.param(500, 500, [500], id="exactly-500"),
        pytest.param(1201, 500, [500, 500, 201], id="1201"),
        pytest.param(7, 3, [3, 3, 1], id="custom-max"),
    ],
)
def test_batches_respect_record_count(count: int, max_records: int, sizes: list[int]) -> None:
    source = [Entry(str(n).encode(), "k") for n in range(count)]
    result = list(batches(source, max_records))
    assert [len(b) for b in result] == sizes
    assert [e for b in result for e in b] == source  # in order, nothing lost


def test_batches_respect_bytes() -> None:
    source = entries(6, size=MIB)
    result = list(batches(source))
    assert [len(b) for b in result] == [5, 1]
    assert all(sum(e.size for e in b) <= MAX_BATCH_BYTES for b in result)


def test_batch_of_exactly_5_mib_is_one_batch() -> None:
    source = [*entries(4, size=MIB), *entries(2, size=MIB // 2)]
    assert [len(b) for b in batches(source)] == [6]
    one_more = [*source, *entries(1, size=1)]
    assert [len(b) for b in batches(one_more)] == [6, 1]


def test_record_of_exactly_1_mib_is_allowed() -> None:
    (batch,) = batches(entries(1, size=MIB, key="partition"))
    assert batch[0].size == MIB


@pytest.mark.parametrize(
    "entry",
    [
        pytest.param(Entry(b"x" * (MIB + 1), ""), id="data"),
        pytest.param(Entry(b"x" * MIB, "k"), id="data-plus-key"),
    ],
)
def test_oversized_record_raises(entry: Entry) -> None:
    with pytest.raises(ValueError, match="exceeds the 1 MiB Kinesis limit"):
        list(batches([Entry(b"ok", "k"), entry]))
