"""`python -m tests.bench.archive_cut`: its batches are cut into segments of 1 MiB (as many
as their bytes make), so that the figure it prints is of cuts."""

from __future__ import annotations

from tests.bench.archive_cut import LINES, SEGMENT_BYTES, batches, one_round


def test_the_batches_are_cut_into_segments_of_a_mebibyte() -> None:
    made = batches(2)
    total = sum(len(text) for _, text in made)
    assert all(len(positions) == LINES for positions, _ in made)
    ns, segments = one_round(made)
    # each segment ends at the line that reaches 1 MiB; what is left waits for more
    assert segments == total // SEGMENT_BYTES and ns > 0
