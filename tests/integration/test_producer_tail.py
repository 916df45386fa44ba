"""`producer tail` as a real process on moto's Kinesis: growing files rotated by rename and by
truncation, a SIGTERM and restart in the middle, and every line in the stream exactly once,
in order per file. Bad lines go to the reject file, never to the stream.

Each line carries its file (`source`) and its number in that file (`seq`); the source is the
partition key, so one file's lines share a shard and their order in the shard is the order
they were acknowledged in. One PutRecords call in flight (the tail's default) because moto
loses records under concurrent PutRecords.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import orjson
import pytest

from devkit.local import LOCALHOST, free_port, scrape_or_nothing
from tests.integration.test_producer_generate import throttling_proxy
from tests.support import Stack, wait_until

pytestmark = pytest.mark.timeout(60)


class LogWriter:
    """An application writing JSON lines to ``path`` the way loggers do (O_APPEND)."""

    def __init__(self, path: Path, source: str) -> None:
        self.path = path
        self.source = source
        self.written = 0
        self._out: IO[bytes] = path.open("ab", buffering=0)
        self._rotations = 0

    def write(self, count: int) -> None:
        lines = []
        for _ in range(count):
            n = self.written
            lines.append(
                orjson.dumps(
                    {
                        "hardwareID": f"HW-{n % 9}",
                        "Timestamp": f"2026-01-01T00:00:00.{n:06d}Z",
                        "source": self.source,
                        "seq": n,
                    }
                )
                + b"\n"
            )
            self.written += 1
        self._out.write(b"".join(lines))

    def rename(self) -> None:
        """logrotate ``create``, first half: the file moves; the app still writes to it."""
        self._rotations += 1
        self.path.rename(self.path.with_name(f"{self.path.name}.{self._rotations}"))

    def reopen(self) -> None:
        """Second half: the app reopens its log path, a new file."""
        self._out.close()
        self._out = self.path.open("ab", buffering=0)

    def rotate_by_truncation(self) -> None:
        """logrotate ``copytruncate``: copy the file away, truncate it in place."""
        self._rotations += 1
        shutil.copyfile(self.path, self.path.with_name(f"{self.path.name}.{self._rotations}"))
        os.truncate(self.path, 0)

    def close(self) -> None:
        self._out.close()


class TailProcess:
    def __init__(self, stack: Stack, tmp_path: Path, *args: str) -> None:
        self.metrics_port = free_port()
        self.log_path = tmp_path / f"tail-{self.metrics_port}.log"
        self._log = self.log_path.open("wb")
        command = [
            sys.executable,
            "-m",
            "producer",
            "tail",
            *("--state-file", str(tmp_path / "state" / "tail.json")),
            *("--poll-interval-s", "0.05", "--rotation-grace-s", "0.3", "--linger-s", "0.02"),
            *("--metrics-port", str(self.metrics_port), "--metrics-host", LOCALHOST),
            *args,
        ]
        self.proc = subprocess.Popen(
            command, env={**os.environ, **stack.env}, stdout=self._log, stderr=subprocess.STDOUT
        )

    def metrics(self) -> dict[str, float]:
        return scrape_or_nothing(self.metrics_port)

    def stop(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(x) for x in self.log_path.read_bytes().splitlines() if x.strip()]


def lines_read(tail: TailProcess) -> float:
    return tail.metrics().get("telemax_producer_lines_read_total", -1)


def lines_by_source(stack: Stack) -> dict[str, list[int]]:
    by_source: dict[str, list[int]] = defaultdict(list)
    for record in stack.stream_records():
        line = orjson.loads(record["Data"])
        assert record["PartitionKey"] == line["source"]
        by_source[line["source"]].append(line["seq"])
    return dict(by_source)


def wait_for_stream(stack: Stack, writers: list[LogWriter], timeout: float = 20) -> None:
    """Until the stream holds as many lines of each file as were written."""
    wanted = {w.source: w.written for w in writers}
    wait_until(
        lambda: {s: len(v) for s, v in lines_by_source(stack).items()} == wanted,
        timeout,
        f"the stream to hold {wanted}",
        every=0.1,
    )


def test_rotation_and_restart_deliver_every_line_once_in_order(
    stack: Stack, tmp_path: Path
) -> None:
    stack.setup(shards=2)
    logs = tmp_path / "logs"
    logs.mkdir()
    a, b = LogWriter(logs / "a.log", "a"), LogWriter(logs / "b.log", "b")
    a.write(100)
    b.write(50)
    pattern = str(logs / "*.log")
    args = (pattern, "--partition-key-field", "source")
    first = TailProcess(stack, tmp_path, *args)
    try:
        # Rotations before the tail has seen the files at all are not followed: wait for it.
        wait_until(lambda: first.metrics().get("telemax_producer_files_open") == 2, 15, "files")
        for _ in range(10):  # files growing while the tail runs
            a.write(20)
            b.write(20)
            time.sleep(0.02)
        a.rename()
        a.write(30)  # late lines, still into the renamed file
        wait_until(
            lambda: first.metrics().get("telemax_producer_rotations_total"), 15, "rename", 0.05
        )
        a.write(20)  # more late lines after the tail noticed: it keeps draining the old file
        a.reopen()
        a.write(100)
        b.write(50)
        # A file the tail never saw cannot be followed through a rotation while it is stopped
        # (no tail can): let it see the new a.log before stopping it.
        wait_until(lambda: lines_read(first) == a.written + b.written, 15, "catch-up", every=0.05)
        a.write(50)
        b.write(30)
        assert first.stop() == 0, first.log_path.read_text()  # mid-flow: flush and save
    finally:
        first.kill()
    a.write(100)  # while no tail runs: the restart must pick these up...
    b.write(100)
    a.rename()  # ...even from a file rotated meanwhile (found beside its old name)
    a.write(20)
    a.reopen()
    a.write(50)
    second = TailProcess(stack, tmp_path, *args)
    try:
        wait_for_stream(stack, [a, b])  # happy path: all read before the copy is taken
        b.rotate_by_truncation()
        b.write(100)  # at once: the file may reach its old size before the next poll
        a.rename()
        a.reopen()
        a.write(60)
        wait_for_stream(stack, [a, b])
        metrics = second.metrics()
        assert second.stop() == 0, second.log_path.read_text()
    finally:
        second.kill()
        a.close()
        b.close()

    assert lines_by_source(stack) == {
        "a": list(range(a.written)),
        "b": list(range(b.written)),
    }, "every line exactly once, in order per file"
    assert metrics["telemax_producer_rotations_total"] >= 2
    assert metrics.get("telemax_producer_lines_rejected_total", 0) == 0
    opened = [e for e in second.events() if e["event"] == "file_opened"]
    assert opened[0]["drains_for"] == str(logs / "a.log"), "found the file renamed while stopped"
    assert opened[0]["path"] == str(logs / "a.log.2")
    events = {e["event"] for e in first.events() + second.events()}
    assert {"file_truncated", "file_detached", "tail_stopped"} <= events
    state = orjson.loads((tmp_path / "state" / "tail.json").read_bytes())
    sizes = {str(p): p.stat().st_size for p in logs.glob("*.log")}
    assert {f["path"]: f["offset"] for f in state["files"]} == sizes, "offsets at the ends"


BAD_LINES = {
    b"this is not json": "not_json",
    b'["an", "array"]': "not_object",
    b'{"Timestamp": "2026-01-01T00:00:00Z"}': "bad_partition_key",
    b'{"hardwareID": "HW-1", "Timestamp": "not a time"}': "bad_timestamp",
    b"": "empty_line",
}


def test_bad_lines_go_to_the_reject_file_not_the_stream(stack: Stack, tmp_path: Path) -> None:
    stack.setup(shards=1)
    log = tmp_path / "app.log"
    good = [
        orjson.dumps({"hardwareID": f"HW-{n}", "Timestamp": f"2026-01-01T00:00:{n:02d}Z"})
        for n in range(6)
    ]
    mixed = [good[0], *BAD_LINES, *good[1:3], b"\xff\xfe binary", *good[3:]]
    log.write_bytes(b"\n".join(mixed) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    tail = TailProcess(stack, tmp_path, str(log), "--reject-file", str(rejects))
    try:
        wait_until(
            lambda: rejects.exists() and len(rejects.read_bytes().splitlines()) == 6,
            15,
            "six rejected lines",
        )
        wait_until(lambda: len(stack.stream_records()) >= len(good), 15, "the good lines")
        metrics = tail.metrics()
        assert tail.stop() == 0
    finally:
        tail.kill()
    assert [r["Data"] for r in stack.stream_records()] == good
    rejected = [orjson.loads(x) for x in rejects.read_bytes().splitlines()]
    assert [r["reason"] for r in rejected] == [*BAD_LINES.values(), "not_json"]
    assert rejected[0]["line"] == "this is not json"
    assert rejected[0]["path"] == str(log)
    assert metrics["telemax_producer_lines_rejected_total"] == 6
    assert metrics["telemax_producer_records_acknowledged_total"] == len(good)


def test_missing_stream_is_one_line_and_exit_2(stack: Stack, tmp_path: Path) -> None:
    done = stack.cli(
        "producer",
        "tail",
        str(tmp_path / "*.log"),
        *("--stream", "no-such-stream", "--state-file", str(tmp_path / "s.json")),
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "telemax-producer: error: Kinesis stream 'no-such-stream' does not exist "
        "(create it with `telemax-consumer setup`)"
    )


def test_sigkill_loses_nothing_and_throttling_is_ridden_out(stack: Stack, tmp_path: Path) -> None:
    """A crash re-sends only what was unacknowledged (at-least-once); a throttled stream
    slows the tail down without losing or doubling a line."""
    stack.setup(shards=1)
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = LogWriter(logs / "app.log", "app")
    writer.write(300)
    args = (str(logs / "*.log"), "--partition-key-field", "source")
    crashed = TailProcess(stack, tmp_path, *args)
    try:
        wait_until(lambda: lines_by_source(stack).get("app"), 15, "the first lines")
        writer.write(300)
        crashed.proc.kill()  # SIGKILL: no flush, no final state save
        crashed.proc.wait(10)
    finally:
        crashed.kill()
    writer.write(100)
    upstream = stack.env.get("AWS_ENDPOINT_URL_KINESIS", stack.env["AWS_ENDPOINT_URL"])
    with throttling_proxy(upstream, throttle_calls=4) as proxy:
        stack.env["AWS_ENDPOINT_URL_KINESIS"] = proxy
        restarted = TailProcess(stack, tmp_path, *args)
        try:
            wait_until(
                lambda: set(lines_by_source(stack)["app"]) == set(range(writer.written)),
                30,
                "every line",
            )
            metrics = restarted.metrics()
            assert restarted.stop() == 0
        finally:
            restarted.kill()
            writer.close()
    seqs = lines_by_source(stack)["app"]
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == list(range(writer.written)), "nothing lost, in order"
    resent = len(seqs) - writer.written
    assert resent < 600, "only what was not yet saved as acknowledged is sent again"
    assert metrics["telemax_producer_records_throttled_total"] > 0
