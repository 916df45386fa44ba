"""An archive object's bytes: one gzip member of its part's lines, packed runs as they are."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from consumer.pipeline import archiver
from consumer.pipeline.archive import Segment
from consumer.pipeline.entries import entries_of
from consumer.pipeline.pieces import Run
from tests.unit.consumer.pipeline.test_entries import finished, records


@pytest.mark.parametrize("packed", [(), (0, 2), (0, 1, 2)], ids=["none", "two", "all"])
@pytest.mark.parametrize("bad", [set(), {3, 17}])
def test_a_part_is_one_gzip_member_of_its_lines_with_its_packed_runs_as_they_are(
    bad: set[int], packed: tuple[int, ...]
) -> None:
    """Each part of a segment (records, dead letters) is one gzip member of its lines in
    order: the deflate blocks of each packed run as they are, the other pieces' lines
    compressed a batch's lines at a time between them, its trailer's CRC and size those of
    all its lines (zlib checks them) — what any gunzip reads whole."""
    pieces: list[Any] = []
    blocks: list[bytes] = []
    for number, start in enumerate(range(0, 120, 40)):
        batch = records(40, bad)
        for n, record in enumerate(batch):
            record["SequenceNumber"] = str(10**20 + start + n)
        found = entries_of(finished(batch, None, []), batch, "telemax", "s", "shardId-0", True)
        for piece in found:
            if number in packed and type(piece) is Run:
                text = piece.line
                piece.pack(archiver.packed_lines)
                assert piece.packed is not None and piece.text is None
                assert piece.packed.lines() == piece.line == text, "unpacked: its lines"
                blocks.append(piece.packed.deflate)
        pieces += found
    assert len(blocks) == (0 if bad else len(packed))
    segment = Segment("shardId-0", tuple(pieces))
    for letters in (False, True):
        lines = segment.lines(letters)
        body = archiver.gzipped(segment, letters)
        member = zlib.decompressobj(wbits=31)
        assert member.decompress(body) == lines
        assert member.eof and not member.unused_data, "one member, nothing after it"
        assert gzip.decompress(body) == lines
        assert lines.count(b"\n") == (len(bad) * 3 if letters else 120 - len(bad) * 3)
        if not letters:
            assert all(block in body for block in blocks), "packed: not compressed again"
