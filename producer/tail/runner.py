"""The tail's I/O: globs and stats files, performs the machine's actions, ships the lines.

Poll-based on purpose: it works the same on every filesystem (NFS and container volumes
included) and needs no inotify dependency; a poll is a glob plus a few ``stat`` calls.
Files are read with ``pread`` at the machine's positions in chunks of ``READ_CHUNK``; a
full chunk means there is more, so the next poll follows at once instead of sleeping.
"""

from __future__ import annotations

import asyncio
import collections
import glob
import os
import stat
import time
from pathlib import Path
from typing import IO

from structlog.typing import FilteringBoundLogger

from kernel.backoff import sleep_or_stop
from kernel.errors import ConfigError
from producer.metrics import ProducerMetrics
from producer.tail import state
from producer.tail.lines import LineChecker, Rejected, reject_record
from producer.tail.machine import (
    Close,
    Detached,
    FileId,
    Line,
    Observation,
    Open,
    Read,
    SavedFile,
    Seen,
    TailMachine,
    Truncated,
)
from producer.tail.sender import AckingSender

READ_CHUNK = 1024 * 1024


def observe(
    patterns: list[str],
    fds: dict[FileId, int],
    probes: dict[FileId, tuple[int, int]],
    missing: dict[FileId, str],
    now: float,
) -> Observation:
    paths: dict[str, Seen] = {}
    for pattern in patterns:
        for path in glob.glob(pattern, recursive=True):
            try:
                st = os.stat(path)
            except OSError:
                continue  # vanished between glob and stat, or a dangling symlink
            if stat.S_ISREG(st.st_mode):
                paths[os.path.abspath(path)] = Seen(FileId(st.st_dev, st.st_ino), st.st_size)
    open_sizes = {file_id: os.fstat(fd).st_size for file_id, fd in fds.items()}
    found = {
        file_id: os.pread(fds[file_id], length, offset)
        for file_id, (offset, length) in probes.items()
        if file_id in fds
    }
    matched = {s.file_id for s in paths.values()}
    moved = {
        file_id: place
        for file_id, old_path in missing.items()
        if file_id not in matched and (place := find_renamed(file_id, old_path)) is not None
    }
    return Observation(paths, open_sizes, now, found, moved)


def find_renamed(file_id: FileId, old_path: str) -> tuple[str, int] | None:
    """(path, size) of the file with ``file_id`` beside ``old_path``: where rotation moves it."""
    try:
        with os.scandir(os.path.dirname(old_path)) as entries:
            for entry in entries:
                if entry.inode() == file_id.ino and entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_dev == file_id.dev:
                        return entry.path, st.st_size
    except OSError:
        pass
    return None


class RejectFile:
    """Rejected lines, appended as JSON lines; synced before offsets past them are saved."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._out: IO[bytes] = path.open("ab")
        except OSError as exc:
            raise ConfigError(f"cannot write reject file {path}: {exc.strerror}") from None

    def write(self, record: bytes) -> None:
        self._out.write(record)

    def sync(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())

    def close(self) -> None:
        self._out.close()


class Tailer:
    def __init__(
        self,
        patterns: list[str],
        machine: TailMachine,
        sender: AckingSender,
        checker: LineChecker,
        rejects: RejectFile,
        state_path: Path,
        *,
        log: FilteringBoundLogger,
        metrics: ProducerMetrics,
        poll_s: float = 0.25,
        save_every_s: float = 1.0,
    ) -> None:
        self.patterns = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
        self.machine = machine
        self._sender = sender
        self._checker = checker
        self._rejects = rejects
        self._state_path = state_path
        self._log = log
        self._metrics = metrics
        self._poll_s = poll_s
        self._save_every_s = save_every_s
        self._fds: dict[FileId, int] = {}
        self._unreadable: set[tuple[str, FileId]] = set()  # reported once each
        self._saved: list[SavedFile] | None = None
        self._saved_at = 0.0
        self._first = True
        self._matched = False
        self.lines_read = 0
        self.lines_rejected = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; the caller flushes the sender and saves the final state."""
        while not stop.is_set():
            busy = await self.poll()
            self.save(force=False)
            if not busy and await sleep_or_stop(self._poll_s, stop):
                return

    async def poll(self) -> bool:
        """One observation and its actions; True when there is more to read right away."""
        seen = observe(
            self.patterns,
            self._fds,
            self.machine.probes(),
            self.machine.missing(),
            time.monotonic(),
        )
        self._report_matches(seen)
        busy = False
        for action in self.machine.step(seen):
            if isinstance(action, Read):
                busy |= await self._read(action)
            elif isinstance(action, Open):
                busy |= self._open(action)
            elif isinstance(action, Close):
                await self._close(action)
            elif isinstance(action, Truncated):
                self._metrics.rotations.labels("truncate").inc()
                self._log.warning(
                    "file_truncated", path=action.path, discarded_bytes=action.discarded
                )
            elif isinstance(action, Detached):
                self._metrics.rotations.labels("rename").inc()
                self._log.info("file_detached", path=action.path, ino=action.file_id.ino)
        self._first = False
        self._metrics.files_open.set(len(self._fds))
        self._metrics.lag_bytes.set(self.machine.lag_bytes(seen.open_sizes))
        return busy

    def _report_matches(self, seen: Observation) -> None:
        matched = bool(seen.paths)
        if not matched and (self._first or self._matched):
            self._log.warning("no_files_match", patterns=self.patterns)
        self._matched = matched

    def _open(self, action: Open) -> bool:
        try:
            fd = os.open(action.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if self._first and isinstance(exc, PermissionError):
                raise ConfigError(f"cannot read {action.path}: {exc.strerror}") from None
            if (action.path, action.file_id) not in self._unreadable:
                self._unreadable.add((action.path, action.file_id))
                self._log.error("file_unreadable", path=action.path, error=exc.strerror)
            return False
        st = os.fstat(fd)
        if FileId(st.st_dev, st.st_ino) != action.file_id:  # replaced since the stat
            os.close(fd)
            return True
        self._fds[action.file_id] = fd
        self.machine.opened(action)
        self._log.info(
            "file_opened",
            path=action.path,
            ino=action.file_id.ino,
            offset=action.offset,
            drains_for=action.drains,
        )
        return True

    async def _read(self, action: Read) -> bool:
        fd = self._fds[action.file_id]
        data = os.pread(fd, min(action.length, READ_CHUNK), action.position)
        await self._ship(self.machine.data_received(action.file_id, data))
        return action.length > READ_CHUNK

    async def _close(self, action: Close) -> None:
        if action.last_line is not None:
            await self._ship([action.last_line])
        os.close(self._fds.pop(action.file_id))
        self._log.info("file_closed", ino=action.file_id.ino)

    async def _ship(self, lines: list[Line]) -> None:
        rejected: collections.Counter[str] = collections.Counter()
        for line in lines:
            verdict = self._checker.check(line)
            if isinstance(verdict, Rejected):
                self._rejects.write(reject_record(line, verdict))
                self.machine.done(line)
                rejected[verdict.reason] += 1
            else:
                await self._sender.submit(verdict)
        self.lines_read += len(lines)
        self._metrics.lines_read.inc(len(lines))
        if rejected:
            self.lines_rejected += rejected.total()
            for reason, count in rejected.items():
                self._metrics.lines_rejected.labels(reason).inc(count)
            self._log.warning(
                "lines_rejected",
                path=lines[0].path,
                reasons=dict(rejected),
                file=str(self._rejects.path),
            )

    def save(self, *, force: bool) -> None:
        """Write the acknowledged offsets if they changed (at most every ``save_every_s``)."""
        now = time.monotonic()
        if not force and now - self._saved_at < self._save_every_s:
            return
        snapshot = self.machine.snapshot()
        if snapshot == self._saved:
            return
        self._rejects.sync()  # rejected lines before these offsets must not be lost
        state.save(self._state_path, snapshot)
        self._saved, self._saved_at = snapshot, now
        self._metrics.state_saves.inc()
        self._log.debug("state_saved", files=len(snapshot))

    def close_files(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
