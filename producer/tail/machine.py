"""The tail state machine: file observations in, actions and lines out. Pure and synchronous.

Like h11 for HTTP, this module knows the protocol (how log files grow, rotate and truncate)
and does no I/O; ``producer.tail.runner`` stats, opens and reads files and feeds the results
back. That keeps every rotation rule testable as a table of observations -> actions.

A file is known by its identity (device, inode), never by its name: names move under
rotation, identities do not. For each file we keep

* ``position`` - bytes read so far (the next read starts here);
* ``consumed`` - just after the last complete line handed out (``position`` minus the
  partial line waiting for its newline);
* acknowledged - just after the last line that is in the stream or in the reject file with
  every line before it. Only this offset is saved, so a restart re-sends what was in
  flight (at-least-once) and never skips a line.

Rules, each one a row in the unit tests:

* A file is read from its saved offset if the state file knows its identity. Otherwise from
  0: it is new, or it replaced a file we followed (a rotation, possibly while we were
  stopped). The one exception: ``start_at_end`` (the runner sets it only when there is no
  state file yet) starts the files found by the first observation at their end.
* Size below ``position``, or the last bytes we read before ``position`` are no longer
  there (truncated and rewritten past the old size between two polls): truncated
  (copytruncate). Start again at 0 in a new epoch; acknowledgements of lines from the old
  epoch no longer move the saved offset.
* The path no longer names the open file (renamed or deleted): keep reading the open
  descriptor to its end. Close it once it is drained and either the path has a non-empty
  successor or ``rotation_grace_s`` passed; a last line without newline is then shipped.
  Only after that is the successor at that path opened, so one path's lines stay in order.
* The open file shows up under another matched name (renamed into the glob): follow it.
* A saved file that no pattern matches any more (rotated while we were stopped, or while a
  stopping tail was still draining it) is looked for beside its old path; if found, it is
  drained from its saved offset first, as above, then its old path is followed again.
  That is why the state file lists, per path and in reading order, every file seen there
  and not read to its end: a draining file, the file waiting for it, the current one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from producer.tail.watermarks import Watermarks


@dataclasses.dataclass(frozen=True, order=True, slots=True)
class FileId:
    dev: int
    ino: int


@dataclasses.dataclass(frozen=True, slots=True)
class Seen:
    """What ``stat`` said about a matched path."""

    file_id: FileId
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    paths: Mapping[str, Seen]  # every regular file the patterns match now
    open_sizes: Mapping[FileId, int]  # fstat of each open file: right even after a rename
    now: float
    # The bytes found where ``TailMachine.probes`` asked to look, per open file.
    probes: Mapping[FileId, bytes] = dataclasses.field(default_factory=dict)
    # Saved files found outside the patterns, where ``TailMachine.missing`` asked to look.
    moved: Mapping[FileId, tuple[str, int]] = dataclasses.field(default_factory=dict)  # path, size


@dataclasses.dataclass(frozen=True, slots=True)
class SavedFile:
    """One entry of the state file: where to resume a file."""

    path: str
    file_id: FileId
    offset: int


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    file_id: FileId
    path: str
    epoch: int
    data: bytes  # without the newline (and a trailing CR)
    end_offset: int  # just after the newline: the file is done up to here once this is
    too_long: bool = False  # over the limit: ``data`` holds only its first bytes


# Actions the I/O layer performs.
@dataclasses.dataclass(frozen=True, slots=True)
class Open:
    path: str
    file_id: FileId
    offset: int
    drains: str | None = None  # a saved file found renamed: drain it for this path first


@dataclasses.dataclass(frozen=True, slots=True)
class Read:
    file_id: FileId
    position: int
    length: int


@dataclasses.dataclass(frozen=True, slots=True)
class Close:
    file_id: FileId
    last_line: Line | None  # an unterminated last line, shipped before closing


# Notices: nothing to do but log and count.
@dataclasses.dataclass(frozen=True, slots=True)
class Truncated:
    path: str
    file_id: FileId
    discarded: int  # bytes of an unfinished line that went with the old content


@dataclasses.dataclass(frozen=True, slots=True)
class Detached:
    path: str  # no longer names the open file (renamed away or deleted); draining it
    file_id: FileId


Action = Open | Read | Close | Truncated | Detached

HEAD_BYTES = 1024  # how much of an over-long line the reject file gets
FINGERPRINT_BYTES = 64  # the last bytes read, checked at every poll to detect a rewrite


@dataclasses.dataclass
class _OpenFile:
    file_id: FileId
    path: str
    position: int
    consumed: int
    partial: bytes = b""
    epoch: int = 0
    skipping: bool = False  # inside an over-long line: discard up to its newline
    skipped_head: bytes = b""
    detached_since: float | None = None
    fingerprint: bytes = b""  # the bytes just before ``position``, as we read them


class TailMachine:
    def __init__(
        self,
        saved: list[SavedFile],
        *,
        start_at_end: bool = False,
        rotation_grace_s: float = 1.0,
        max_line_bytes: int = 1024 * 1024,
    ) -> None:
        self._resume = {s.file_id: s for s in saved}
        self._start_at_end = start_at_end
        self._rotation_grace_s = rotation_grace_s
        self._max_line_bytes = max_line_bytes
        self._open: dict[FileId, _OpenFile] = {}
        self._initial: dict[str, FileId] | None = None  # what the first observation found
        self._now = 0.0
        self._waiting: dict[FileId, str] = {}  # files whose path waits for a drain to finish
        self.watermarks = Watermarks()

    # -- observations -> actions -------------------------------------------------------

    def step(self, seen: Observation) -> list[Action]:
        if self._initial is None:
            self._initial = {path: s.file_id for path, s in seen.paths.items()}
        self._now = seen.now
        where = {s.file_id: path for path, s in sorted(seen.paths.items())}
        actions: list[Action] = []
        for f in list(self._open.values()):
            size = seen.open_sizes.get(f.file_id)
            if size is not None:
                actions.extend(self._follow(f, size, where.get(f.file_id), seen))
        draining = {f.path for f in self._open.values() if f.detached_since is not None}
        # Saved files found renamed, one at a time per path, oldest first (state file order).
        for file_id, saved in list(self._resume.items()):
            place = seen.moved.get(file_id)
            if place is None or file_id in self._open or file_id in where:
                continue
            if saved.path not in draining:
                real_path, size = place
                offset = saved.offset if saved.offset <= size else 0
                actions.append(Open(real_path, file_id, offset, drains=saved.path))
                draining.add(saved.path)
        self._waiting = {}
        for path, s in sorted(seen.paths.items()):
            if s.file_id in self._open:
                continue
            if path in draining:
                self._waiting[s.file_id] = path  # in the state file, so a restart finds it
                continue
            actions.append(Open(path, s.file_id, self._start_offset(path, s)))
        # A saved offset for a file that cannot be found can never be used: forget it, so a
        # recycled inode number is not mistaken for it later in this run.
        self._resume = {k: v for k, v in self._resume.items() if k in where or k in seen.moved}
        self.watermarks.forget_except(set(self._open))
        return actions

    def _follow(self, f: _OpenFile, size: int, path: str | None, seen: Observation) -> list[Action]:
        actions: list[Action] = []
        probe = seen.probes.get(f.file_id)
        if size < f.position or (probe is not None and probe != f.fingerprint):
            actions.append(Truncated(f.path, f.file_id, len(f.partial)))
            f.epoch += 1
            f.position = f.consumed = 0
            f.partial, f.skipping, f.fingerprint = b"", False, b""
            self.watermarks.start(f.file_id, 0, f.epoch)
        if path is not None:
            f.path, f.detached_since = path, None
        elif f.detached_since is None:
            f.detached_since = seen.now
            actions.append(Detached(f.path, f.file_id))
        if size > f.position:
            actions.append(Read(f.file_id, f.position, size - f.position))
        elif f.detached_since is not None and self._may_close(f, seen):
            actions.append(Close(f.file_id, self._last_line(f)))
            del self._open[f.file_id]
        return actions

    def _may_close(self, f: _OpenFile, seen: Observation) -> bool:
        assert f.detached_since is not None
        successor = seen.paths.get(f.path)
        if successor is not None and successor.size > 0:
            return True  # the writer has moved on to the new file
        return seen.now - f.detached_since >= self._rotation_grace_s

    def _last_line(self, f: _OpenFile) -> Line | None:
        if f.skipping:
            line = Line(f.file_id, f.path, f.epoch, f.skipped_head, f.position, too_long=True)
        elif f.partial:
            line = Line(f.file_id, f.path, f.epoch, f.partial.removesuffix(b"\r"), f.position)
        else:
            return None
        self.watermarks.expect(f.file_id, f.epoch, f.position)
        return line

    def _start_offset(self, path: str, s: Seen) -> int:
        saved = self._resume.get(s.file_id)
        if saved is not None:
            # Shorter than the saved offset: truncated while we were away.
            return saved.offset if saved.offset <= s.size else 0
        assert self._initial is not None
        if self._start_at_end and self._initial.get(path) == s.file_id:
            return s.size
        return 0

    # -- results of actions ------------------------------------------------------------

    def opened(self, action: Open) -> None:
        self._open[action.file_id] = _OpenFile(
            action.file_id,
            action.drains or action.path,
            position=action.offset,
            consumed=action.offset,
            detached_since=self._now if action.drains else None,
        )
        self._resume.pop(action.file_id, None)
        self.watermarks.start(action.file_id, action.offset, 0)

    def data_received(self, file_id: FileId, data: bytes) -> list[Line]:
        """Bytes read at the file's position -> the complete lines they finish."""
        f = self._open[file_id]
        start = f.position
        f.position += len(data)
        f.fingerprint = (f.fingerprint + data[-FINGERPRINT_BYTES:])[-FINGERPRINT_BYTES:]
        lines: list[Line] = []
        if f.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                return lines
            end = start + newline + 1
            lines.append(Line(f.file_id, f.path, f.epoch, f.skipped_head, end, too_long=True))
            f.skipping, f.skipped_head, f.consumed = False, b"", end
            data = data[newline + 1 :]
        parts = (f.partial + data).split(b"\n")
        rest = parts.pop()  # after the last newline: unfinished
        end = f.consumed
        for part in parts:
            end += len(part) + 1
            if len(part) > self._max_line_bytes:
                lines.append(Line(f.file_id, f.path, f.epoch, part[:HEAD_BYTES], end, True))
            else:
                lines.append(Line(f.file_id, f.path, f.epoch, part.removesuffix(b"\r"), end))
        f.consumed = end
        if len(rest) > self._max_line_bytes:  # do not buffer without limit
            f.partial, f.skipping, f.skipped_head = b"", True, rest[:HEAD_BYTES]
        else:
            f.partial = rest
        for line in lines:
            self.watermarks.expect(line.file_id, line.epoch, line.end_offset)
        return lines

    def done(self, line: Line) -> None:
        """``line`` is in the stream or in the reject file."""
        self.watermarks.done(line.file_id, line.epoch, line.end_offset)

    def missing(self) -> dict[FileId, str]:
        """Saved files not open yet, with their old paths: the runner looks for those that no
        pattern matches beside their old path (only while a restart catches up)."""
        return {file_id: saved.path for file_id, saved in self._resume.items()}

    def probes(self) -> dict[FileId, tuple[int, int]]:
        """Where to look before the next step: (offset, length) of each open file's
        fingerprint. Comparing it catches a truncation that the size alone hides."""
        return {
            f.file_id: (f.position - len(f.fingerprint), len(f.fingerprint))
            for f in self._open.values()
            if f.fingerprint
        }

    # -- what to save ------------------------------------------------------------------

    def snapshot(self) -> list[SavedFile]:
        """The state file's content: every file seen at a matched path that is not read to
        its end yet, with its acknowledged offset. Per path, in the order to read them: a
        draining file, saved files not open yet (a failed open must not lose them), files
        waiting for the drain (offset 0), the open file that follows the path."""
        ranked: list[tuple[int, SavedFile]] = [
            (
                0 if f.detached_since is not None else 3,
                SavedFile(f.path, f.file_id, self.watermarks.acknowledged(f.file_id)),
            )
            for f in self._open.values()
        ]
        ranked += [(1, s) for k, s in self._resume.items() if k not in self._open]
        ranked += [
            (2, SavedFile(path, k, 0)) for k, path in self._waiting.items() if k not in self._resume
        ]
        ranked.sort(key=lambda r: (r[1].path, r[0]))  # stable: saved files keep their order
        return [saved for _, saved in ranked]

    def lag_bytes(self, open_sizes: Mapping[FileId, int]) -> int:
        """Bytes in open files after the acknowledged offset."""
        return sum(
            max(0, size - self.watermarks.acknowledged(file_id))
            for file_id, size in open_sizes.items()
            if file_id in self._open
        )

    @property
    def open_files(self) -> list[FileId]:
        return list(self._open)
