"""Acknowledged offsets per file: the highest offset with every line before it done.

Lines are registered in file order (``expect``) and finish in any order (``done``): several
PutRecords calls may be in flight, and a rejected line is done at once. The acknowledged
offset only moves over an unbroken run of finished lines, so saving it never skips a line
that is still in flight. Pure; the tail machine owns one.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Collection, Hashable


@dataclasses.dataclass
class _Progress:
    epoch: int
    acknowledged: int
    order: collections.deque[int] = dataclasses.field(default_factory=collections.deque)
    finished: dict[int, bool] = dataclasses.field(default_factory=dict)  # end offset -> done


class Watermarks:
    def __init__(self) -> None:
        self._files: dict[Hashable, _Progress] = {}

    def start(self, file: Hashable, offset: int, epoch: int) -> None:
        """Follow ``file`` from ``offset``; a new epoch (truncation) drops what was pending."""
        self._files[file] = _Progress(epoch, offset)

    def expect(self, file: Hashable, epoch: int, end_offset: int) -> None:
        progress = self._files.get(file)
        if progress is not None and progress.epoch == epoch:
            progress.order.append(end_offset)
            progress.finished[end_offset] = False

    def done(self, file: Hashable, epoch: int, end_offset: int) -> None:
        progress = self._files.get(file)
        if progress is None or progress.epoch != epoch or end_offset not in progress.finished:
            return  # a line of content that was truncated away, or of a forgotten file
        progress.finished[end_offset] = True
        order, finished = progress.order, progress.finished
        while order and finished[order[0]]:
            first = order.popleft()
            del finished[first]
            progress.acknowledged = first

    def acknowledged(self, file: Hashable) -> int:
        progress = self._files.get(file)
        return progress.acknowledged if progress else 0

    def in_flight(self, file: Hashable) -> int:
        progress = self._files.get(file)
        return len(progress.order) if progress else 0

    def forget_except(self, keep: Collection[Hashable]) -> None:
        for file in [f for f in self._files if f not in keep]:
            del self._files[file]
