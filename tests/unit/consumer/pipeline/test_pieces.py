"""A batch's positions packed into one string (consumer.pipeline.pieces.PackedPositions): the
same positions as the tuples they stand for, read, bisected and cut alike."""

from __future__ import annotations

import bisect
import random

import pytest

from consumer.pipeline.pieces import (
    PackedPositions,
    Position,
    Run,
    order,
    positions_of,
    split_pieces,
)


def sequence_numbers(count: int, width: int = 56, seed: int = 7) -> list[str]:
    """Increasing decimal sequence numbers of one width, as a Kinesis shard gives them."""
    rng = random.Random(seed)
    first = 10 ** (width - 1) + rng.randrange(10**6)
    numbers, at = [], first
    for _ in range(count):
        at += rng.randrange(1, 10**4)
        numbers.append(str(at))
    return numbers


@pytest.mark.parametrize("subs_kind", ["zeros", "aggregated"])
def test_packed_positions_read_as_the_tuples(subs_kind: str) -> None:
    sequences = sequence_numbers(300)
    subs = [0] * 300 if subs_kind == "zeros" else [n % 4 for n in range(300)]
    tuples: list[Position] = list(zip(sequences, subs, strict=True))
    packed = positions_of(sequences, subs)

    assert isinstance(packed, PackedPositions)
    assert len(packed) == 300
    assert list(packed) == tuples
    assert [packed[i] for i in range(-300, 300)] == tuples + tuples
    assert packed[17:40] == tuples[17:40] and packed[::-7] == tuples[::-7]
    for index in (300, -301):
        with pytest.raises(IndexError):
            packed[index]
    assert tuples[123] in packed and packed.index(tuples[123]) == 123


def test_packed_positions_bisect_as_the_tuples() -> None:
    sequences = sequence_numbers(1000, seed=3)
    subs = [n % 3 for n in range(1000)]
    tuples: list[Position] = list(zip(sequences, subs, strict=True))
    packed = positions_of(sequences, subs)
    rng = random.Random(5)
    probes = [order(rng.choice(tuples)) for _ in range(50)]
    probes += [(int(sequences[0]) - 1, 0), (int(sequences[-1]) + 1, 0)]
    for probe in probes:
        for find in (bisect.bisect_left, bisect.bisect_right):
            assert find(packed, probe, key=order) == find(tuples, probe, key=order)


@pytest.mark.parametrize(
    ("sequences", "subs"),
    [
        (["9", "10", "11"], [0, 0, 0]),  # widths differ
        (["100", "20", "3000"], [0, 1, 0]),  # widths differ, the total a multiple of one
        ([], []),
    ],
)
def test_positions_of_other_widths_is_the_tuples(sequences: list[str], subs: list[int]) -> None:
    found = positions_of(sequences, subs)
    assert not isinstance(found, PackedPositions)
    assert list(found) == list(zip(sequences, subs, strict=True))


def test_a_run_over_packed_positions_is_cut_as_over_tuples() -> None:
    sequences = sequence_numbers(40, seed=11)
    subs = [0] * 40
    tuples: list[Position] = list(zip(sequences, subs, strict=True))
    text = b"".join(b'{"n":%d}\n' % n for n in range(40))
    packed_run = Run(positions_of(sequences, subs), 0, 40, None, "h", text)
    tuple_run = Run(tuples, 0, 40, None, "h", text)
    for at in (0, 1, 17, 38, 39):
        mine, theirs = packed_run.split(order(tuples[at])), tuple_run.split(order(tuples[at]))
        for a, b in zip(mine, theirs, strict=True):
            if b is None:
                assert a is None
                continue
            assert a is not None
            assert (a.position, a.last, a.count, a.line) == (b.position, b.last, b.count, b.line)
    head, tail = split_pieces([packed_run], tuples[24])
    assert [p.last for p in head] == [tuples[24]] and [p.position for p in tail] == [tuples[25]]
