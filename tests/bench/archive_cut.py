"""What finding an archive segment's end costs a line: ``python -m tests.bench.archive_cut
[--batches N] [--rounds R]``.

A shard's ``ArchiveBuffer`` (consumer.pipeline.archive) is given batches of 10,000 archive
lines (about 250 bytes each, the size of a TELEMAX reading's) as whole-batch ``Run``s and cuts
segments of 1 MiB out of them — the bench's ``archive`` contender's size, so a batch is cut
two or three times —, each segment taken as written at once; nothing is packed, sent or
compressed. CPU (process time) a line, the best of R rounds. Run it from each tree to compare
a change (a worktree of the revision before, beside): stable to a few per cent here.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence

from consumer.pipeline.archive import ArchiveBuffer
from consumer.pipeline.pieces import Position, Run, positions_of

LINES = 10_000
SEGMENT_BYTES = 1 << 20


def batches(count: int) -> list[tuple[Sequence[Position], bytes]]:
    rng = random.Random(3)
    made = []
    first = 10**55
    for _ in range(count):
        numbers = [str(first + n) for n in range(LINES)]
        first += LINES
        lines = b"".join(
            b'{"sequenceNumber":"%s","record":{"x":"%s"}}\n'
            % (number.encode(), b"y" * rng.randrange(180, 260))
            for number in numbers
        )
        made.append((positions_of(numbers, [0] * LINES), lines))
    return made


def one_round(made: list[tuple[Sequence[Position], bytes]]) -> tuple[float, int]:
    """(CPU ns a line, segments cut)."""
    buffer = ArchiveBuffer("shard-1", max_bytes=SEGMENT_BYTES, max_age_s=1e9)
    cut = 0
    started = time.process_time()
    for now, (positions, text) in enumerate(made):
        buffer.add([Run(positions, 0, LINES, None, "hour=0", text)], float(now))
        while (segment := buffer.next_segment(float(now))) is not None:
            buffer.written(segment.last, float(now))
            cut += 1
    return (time.process_time() - started) / (len(made) * LINES) * 1e9, cut


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    made = batches(args.batches)
    results = [one_round(made) for _ in range(args.rounds)]
    best = min(ns for ns, _ in results)
    print(
        f"archive cut: {best:.0f} ns a line, best of {args.rounds} rounds "
        f"({args.batches} batches of {LINES:,} lines, {results[0][1]} segments of 1 MiB a round)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
