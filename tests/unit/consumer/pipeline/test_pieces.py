"""consumer.pipeline.pieces: a batch's positions packed into one string (PackedPositions), the
same positions as the tuples they stand for, read, bisected and cut alike; a Run's lines
weighed and cut in its bytes as its items' lines would be one by one."""

from __future__ import annotations

import bisect
import itertools
import random
import zlib

import pytest

from consumer.pipeline.pieces import (
    Packed,
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


def lined_run(part: tuple[int, int], packed: bool) -> tuple[Run, list[bytes]]:
    """A run of items ``part`` of a 30-item batch with lines of 1 to 40 bytes, and its
    items' lines; ``packed``: the batch's whole run, held compressed."""
    rng = random.Random(5)
    lines = [b"x" * rng.randrange(0, 40) + b"\n" for _ in range(30)]
    at: list[Position] = [(str(n), 0) for n in range(30)]
    text = b"".join(lines)
    ends = [0, *itertools.accumulate(map(len, lines))]
    start, stop = part
    if (start, stop) != (0, 30):
        return Run(at, start, stop, None, "h", text, ends[start], ends[stop]), lines[start:stop]
    run = Run(at, 0, 30, None, "h", text)
    if packed:
        packer = zlib.compressobj(wbits=-15)
        deflate = packer.compress(text) + packer.flush(zlib.Z_SYNC_FLUSH)
        run.pack(lambda lines: Packed(deflate, zlib.crc32(lines), len(lines)))
        assert run.packed is not None and run.text is None
    return run, lines


@pytest.mark.parametrize(
    ("part", "packed"),
    [((0, 30), False), ((0, 30), True), ((0, 12), False), ((12, 30), False), ((5, 6), False)],
    ids=["whole", "packed", "head", "rest", "one"],
)
def test_a_run_reaches_a_weight_and_is_cut_where_its_lines_one_by_one_would(
    part: tuple[int, int], packed: bool
) -> None:
    """cut_reaching(w): the first items that weigh w or more together, at least one, at most all
    (every w from 0 to past the run's bytes); cut_reaching and cut give the same halves,
    each with its items' lines, and their weights."""
    run, lines = lined_run(part, packed)
    assert run.weight == sum(map(len, lines)) and run.line == b"".join(lines)
    total = sum(map(len, lines))
    for weight in range(total + 3):
        reached = 1 + sum(1 for e in itertools.accumulate(map(len, lines)) if e < weight)
        expected = min(max(reached, 1), len(lines))
        assert run.cut_reaching(weight)[0].count == expected, weight
        for head, rest in (run.cut_reaching(weight), run.cut(expected)):
            assert (head.count, head.line, head.weight) == (
                expected,
                b"".join(lines[:expected]),
                sum(map(len, lines[:expected])),
            )
            if expected == len(lines):
                assert rest is None and head is run
            else:
                assert rest is not None
                assert (rest.position, rest.line) == (
                    run.positions[run.start + expected],
                    b"".join(lines[expected:]),
                )
                assert rest.weight == sum(map(len, lines[expected:]))


def test_a_part_of_a_batch_without_its_end_is_refused() -> None:
    at: list[Position] = [("1", 0), ("2", 0)]
    with pytest.raises(ValueError, match="where they end"):
        Run(at, 1, 2, None, "h", b"a\nb\n")
    assert Run(at, 1, 2, None).count == 1  # no lines: nothing to find
