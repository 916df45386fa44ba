"""The tail's state file: acknowledged offsets per file identity, written atomically.

Format (JSON, version 1)::

    {"version": 1, "files": [{"path": "/var/log/app.log", "dev": 2049, "ino": 131, "offset": 8812}]}

``offset`` is where the next unacknowledged line starts. A write goes to a temporary file that
is fsynced and renamed over the old one, so a crash leaves either the old or the new state,
never half of one. A lock next to it keeps two tails from sharing one state file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import orjson

from kernel.errors import ConfigError
from producer.tail.machine import FileId, SavedFile

VERSION = 1


def default_path() -> Path:
    """``$XDG_STATE_HOME/telemax/tail-state.json`` (``~/.local/state`` when unset)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "telemax" / "tail-state.json"


def load(path: Path) -> list[SavedFile] | None:
    """The saved files, or None when there is no state file yet."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read state file {path}: {exc.strerror}") from None
    try:
        document = orjson.loads(raw)
        if document.get("version") != VERSION:
            raise ValueError(f"version {document.get('version')!r}, expected {VERSION}")
        return [
            SavedFile(str(f["path"]), FileId(int(f["dev"]), int(f["ino"])), int(f["offset"]))
            for f in document["files"]
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(
            f"state file {path} is not valid ({exc}); move it away to start over"
        ) from None


def encode(files: list[SavedFile]) -> bytes:
    entries = [
        {"path": f.path, "dev": f.file_id.dev, "ino": f.file_id.ino, "offset": f.offset}
        for f in files
    ]
    return orjson.dumps({"version": VERSION, "files": entries}, option=orjson.OPT_INDENT_2)


def save(path: Path, files: list[SavedFile]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as out:
        out.write(encode(files))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a crash
    finally:
        os.close(directory)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``PATH.lock`` for the block; a second tail on the same state file is refused."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot use state file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"state file {path} is in use by another `producer tail`; "
                "give each tail its own --state-file"
            ) from None
        yield
    finally:
        os.close(fd)
