"""The 5-minute end of a subscription, on kinesis-local: AWS ends every SubscribeToShard after
5 minutes with a clean end of the HTTP/2 stream, and the worker subscribes again after the last
``ContinuationSequenceNumber`` — without a gap or a duplicate. kinesis-local hard-codes the 5
minutes (``interruptAfter(5.minutes)``, kinesis-mock's ``SubscribeToShardRequest.scala``), so
a proxy between the worker and it (``devkit.h2proxy``) ends each subscription after 2 s, on an
event boundary, while records flow; the emulator's own events, continuations and records are
what the worker reads."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.h2proxy import MessageBoundaries
from devkit.local import free_port, stop_process
from devkit.netns import KINESIS_LOCAL_PORT
from tests.integration.conftest import Backends
from tests.integration.test_fanout import Fanout

pytestmark = pytest.mark.timeout(150)
END_AFTER_S = 2.0


def message(payload: bytes) -> bytes:
    """An event-stream-shaped message: its total length first (the rest is not read)."""
    return (len(payload) + 4).to_bytes(4, "big") + payload


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 7, 11])
def test_the_proxy_cuts_only_between_messages(cut: int) -> None:
    relayed = message(b"abcdefgh") + message(b"") + message(b"x" * 30)
    boundaries = MessageBoundaries()
    between = []
    for at in range(0, len(relayed), cut):
        boundaries.feed(relayed[at : at + cut])
        between.append((min(at + cut, len(relayed)), boundaries.between_messages))
    ends = {12, 16, len(relayed)}
    assert [done for done, yes in between if yes] == [d for d, _ in between if d in ends]


@pytest.fixture
def through_proxy(backends: Backends, tmp_path: Path) -> Iterator[tuple[Fanout, Path]]:
    network, port = backends.network, free_port()
    proxy_log = tmp_path / "h2proxy.log"
    with proxy_log.open("wb") as log:
        proxy = network.popen(
            [
                sys.executable,
                "-m",
                "devkit.h2proxy",
                "--listen",
                str(port),
                "--upstream",
                f"127.0.0.1:{KINESIS_LOCAL_PORT}",
                "--end-after",
                str(END_AFTER_S),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            network.wait_for_port(port, 15, proxy)
            setup = Fanout(backends, tmp_path, workers_kinesis=f"http://127.0.0.1:{port}")
            done = setup.command("setup")
            assert done.returncode == 0, done.stdout
            yield setup, proxy_log
        finally:
            stop_process(proxy, timeout=3)


def test_subscriptions_ended_every_2_s_resume_without_a_gap_or_a_duplicate(
    through_proxy: tuple[Fanout, Path],
) -> None:
    fanout, proxy_log = through_proxy
    worker = fanout.worker("w1")
    devices: set[str] = set()
    try:
        for burst in range(8):  # records keep coming while subscriptions end
            devices |= fanout.put(60, f"EXP-{burst}-")
            time.sleep(1.5)
        fanout.until(lambda: fanout.count() == 480, 60, "every record stored")
        assert fanout.stored() == devices
        metrics = fanout.metrics(worker)
    finally:
        assert worker.stop() == 0, "\n".join(worker.log_lines()[-20:])
    ended = proxy_log.read_text().count("ended ")
    assert ended >= 6, f"the proxy ended {ended} subscriptions"
    # a subscription reopened anywhere but after its continuation would write some again
    assert metrics["telemax_records_written_total"] == 480
    assert metrics["telemax_fanout_resubscriptions_total"] >= ended / 2
    reopened = [line for line in worker.log_lines() if "subscription_reopened" in line]
    assert reopened and all('"detail":"ended' in line for line in reopened), reopened[:3]
