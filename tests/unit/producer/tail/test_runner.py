"""The tail's I/O loop on real files with a scripted PutRecords: lines shipped, rejects
written, offsets saved only once acknowledged, unreadable files reported."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from consumer.feeds.telemax import to_item
from kernel import logs
from kernel.errors import ConfigError
from producer.metrics import ProducerMetrics
from producer.tail import state
from producer.tail.lines import LineChecker
from producer.tail.machine import Line, TailMachine
from producer.tail.runner import RejectFile, Tailer
from producer.tail.sender import AckingSender
from tests.unit.producer.tail.test_sender import ScriptedKinesis

pytestmark = pytest.mark.timeout(10)


def reading(n: int) -> bytes:
    return orjson.dumps({"hardwareID": f"HW-{n % 3}", "Timestamp": f"2026-01-01T00:00:{n:02d}Z"})


class Rig:
    def __init__(self, tmp_path: Path, kinesis: ScriptedKinesis) -> None:
        self.log_path = tmp_path / "app.log"
        self.state_path = tmp_path / "state.json"
        self.rejects = RejectFile(tmp_path / "rejects.jsonl")
        self.machine = TailMachine(state.load(self.state_path) or [])

        def acknowledged(entry: Any) -> None:
            assert isinstance(entry.context, Line)
            self.machine.done(entry.context)

        self.sender = AckingSender(cast(Any, kinesis), "s", acknowledged, linger_s=0)
        self.tailer = Tailer(
            [str(tmp_path / "*.log")],
            self.machine,
            self.sender,
            LineChecker("hardwareID", to_item),
            self.rejects,
            self.state_path,
            log=logs.get(),
            metrics=ProducerMetrics(),
            save_every_s=0,
        )

    async def poll_and_flush(self) -> None:
        sending = asyncio.create_task(self.sender.run())
        while await self.tailer.poll():
            pass
        await self.sender.close()
        await sending
        self.tailer.save(force=True)


async def test_lines_are_shipped_rejected_and_the_offset_saved(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis()
    rig = Rig(tmp_path, kinesis)
    good = [reading(n) for n in range(5)]
    rig.log_path.write_bytes(b"\n".join([*good[:2], b"garbage", *good[2:]]) + b"\npartial")
    await rig.poll_and_flush()
    assert [data for data, _ in kinesis.stored] == good
    rejected = [orjson.loads(x) for x in (tmp_path / "rejects.jsonl").read_bytes().splitlines()]
    assert [(r["reason"], r["line"]) for r in rejected] == [("not_json", "garbage")]
    size_without_partial = rig.log_path.stat().st_size - len(b"partial")
    assert [s.offset for s in state.load(rig.state_path) or []] == [size_without_partial]
    assert (rig.tailer.lines_read, rig.tailer.lines_rejected) == (6, 1)
    rig.tailer.close_files()


async def test_unacknowledged_lines_are_not_saved(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis()
    kinesis.gate.clear()  # nothing is ever acknowledged
    rig = Rig(tmp_path, kinesis)
    rig.log_path.write_bytes(reading(1) + b"\n")
    sending = asyncio.create_task(rig.sender.run())
    await rig.tailer.poll()
    await rig.tailer.poll()
    rig.tailer.save(force=True)
    assert [s.offset for s in state.load(rig.state_path) or []] == [0]
    sending.cancel()
    rig.tailer.close_files()


async def test_restart_resumes_after_the_saved_offset(tmp_path: Path) -> None:
    kinesis = ScriptedKinesis()
    first = Rig(tmp_path, kinesis)
    first.log_path.write_bytes(reading(1) + b"\n")
    await first.poll_and_flush()
    first.tailer.close_files()
    with first.log_path.open("ab") as out:
        out.write(reading(2) + b"\n")
    second = Rig(tmp_path, kinesis)
    await second.poll_and_flush()
    assert [data for data, _ in kinesis.stored] == [reading(1), reading(2)]
    second.tailer.close_files()


async def test_unreadable_file_at_start_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path, ScriptedKinesis())
    rig.log_path.write_bytes(b"{}\n")

    def refuse(path: str, flags: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(ConfigError, match=r"cannot read .*app.log: Permission denied"):
        await rig.tailer.poll()


async def test_unreadable_file_later_is_logged_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(tmp_path, ScriptedKinesis())
    await rig.tailer.poll()  # nothing matched yet: the first poll is over
    rig.log_path.write_bytes(b"{}\n")
    real_open = os.open

    def refuse(path: str, flags: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    assert await rig.tailer.poll() is False
    monkeypatch.setattr(os, "open", real_open)
    assert await rig.tailer.poll() is True  # opened now
    rig.tailer.close_files()
