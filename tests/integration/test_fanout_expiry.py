"""The 5-minute end of a subscription, on kinesis-local: AWS ends every SubscribeToShard after 5
minutes with a clean end of the HTTP/2 stream, and the worker subscribes again after the last
``ContinuationSequenceNumber`` — without a gap or a duplicate. kinesis-local hard-codes the 5
minutes (``.interruptAfter(5.minutes)``, kinesis-mock's
``kinesis-mock/src/main/scala/kinesis/mock/api/SubscribeToShardRequest.scala`` line 152 at
commit 484f777c), so a proxy between the worker and it (``devkit.h2proxy``) ends each
subscription after 2 s, between two event-stream messages, while records flow; the emulator's
own events, continuations and records are what the worker reads. Proven: every record stored,
each written once (a subscription reopened anywhere but after its continuation would write some
again), and every reopening was for a clean end (the proxy lets the emulator free the
subscription first, so no ResourceInUse)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.h2proxy import MessageBoundaries
from devkit.local import WorkerProcess, free_port, metrics_text, sample, stop_process
from devkit.netns import KINESIS_LOCAL_PORT
from tests.integration.conftest import Backends
from tests.integration.test_fanout import Fanout

pytestmark = pytest.mark.timeout(120)
END_AFTER_S = 2.0
BURSTS, PER_BURST = 8, 60
RESUBSCRIPTIONS = "telemax_fanout_resubscriptions_total"


def message(payload: bytes) -> bytes:
    """An event-stream-shaped message: its total length first (the rest is not read)."""
    return (len(payload) + 4).to_bytes(4, "big") + payload


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 11, 100])
def test_the_proxy_cuts_only_between_messages(step: int) -> None:
    relayed = message(b"abcdefgh") + message(b"") + message(b"x" * 30)
    boundaries = MessageBoundaries()
    assert boundaries.between_messages
    seen = []
    for at in range(0, len(relayed), step):  # relayed in frames of ``step`` bytes
        boundaries.feed(relayed[at : at + step])
        seen.append((min(at + step, len(relayed)), boundaries.between_messages))
    ends = {12, 16, len(relayed)}  # where a message ends
    assert [done for done, between in seen if between] == [d for d, _ in seen if d in ends]
    assert boundaries.messages == 3


@pytest.mark.parametrize("relayed", [0, 1, 3, 4, 5, 12, 13, 14, 16, 17, 50])
def test_the_proxy_finds_the_end_of_the_message_under_way(relayed: int) -> None:
    data = message(b"abcdefgh") + message(b"") + message(b"x" * 30)  # ends: 12, 16, 50
    boundaries = MessageBoundaries()
    boundaries.feed(data[:relayed])
    end = min(e for e in (0, 12, 16, 50) if e >= relayed) if relayed else 0
    assert boundaries.to_boundary(data[relayed:]) == end - relayed
    if end > relayed + 1:  # too few bytes to reach it
        assert boundaries.to_boundary(data[relayed : end - 1]) is None


class Proxy:
    """``devkit.h2proxy`` in the private network, its stderr in a file."""

    def __init__(self, backends: Backends, log: Path, end_after: float) -> None:
        self.port, self.log = free_port(), log
        upstream = f"127.0.0.1:{KINESIS_LOCAL_PORT}"
        argv = ["--listen", str(self.port), "--upstream", upstream, "--end-after", str(end_after)]
        with log.open("wb") as out:
            self.proc = backends.network.popen(
                [sys.executable, "-m", "devkit.h2proxy", *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            backends.network.wait_for_port(self.port, 15, self.proc)
        except BaseException:
            stop_process(self.proc, timeout=3)
            raise

    def ends(self) -> int:
        return sum(line.startswith("ended ") for line in self.log.read_text().splitlines())


@pytest.fixture
def through_proxy(backends: Backends, tmp_path: Path) -> Iterator[tuple[Fanout, Proxy]]:
    proxy = Proxy(backends, tmp_path / "h2proxy.log", END_AFTER_S)
    try:
        fanout = Fanout(backends, tmp_path, workers_kinesis=f"http://127.0.0.1:{proxy.port}")
        done = fanout.command("setup")  # through the proxy too: its HTTP/1.1 byte pipe
        assert done.returncode == 0, done.stdout
        yield fanout, proxy
    finally:
        assert stop_process(proxy.proc, timeout=3) == 0, proxy.log.read_text()[-2000:]


def resubscriptions(fanout: Fanout, worker: WorkerProcess) -> dict[str, float]:
    """The worker's reopened subscriptions by cause (the scrape in ``Fanout.metrics`` sums
    over labels)."""
    text = fanout.network.run(lambda: metrics_text(worker.metrics_port), timeout=10)
    causes = ("ended", "in_use", "reset", "silent", "throttled", "failure")
    return {cause: sample(text, RESUBSCRIPTIONS, cause=cause) for cause in causes}


def test_subscriptions_ended_every_2_s_resume_without_a_gap_or_a_duplicate(
    through_proxy: tuple[Fanout, Proxy],
) -> None:
    fanout, proxy = through_proxy
    worker = fanout.worker("w1")
    devices: set[str] = set()
    produced = BURSTS * PER_BURST
    try:
        for burst in range(BURSTS):  # records keep coming while subscriptions end
            devices |= fanout.put(PER_BURST, f"EXP-{burst}-")
            time.sleep(1.5)
        fanout.until(lambda: fanout.count() == produced, 60, "every record stored")
        # one more end of each shard's subscription with nothing new: no replay after it either
        after = proxy.ends()
        fanout.until(lambda: proxy.ends() >= after + 2, 15, "two more subscriptions ended")
        assert fanout.stored() == devices
        written = fanout.metrics(worker)["telemax_records_written_total"]
        reopened = resubscriptions(fanout, worker)
    finally:
        assert worker.stop() == 0, "\n".join(worker.log_lines()[-20:])
    ended = proxy.ends()
    assert ended >= 6, f"the proxy ended {ended} subscriptions"
    assert written == produced  # each once: a replay after a reopening would write again
    assert 3 <= reopened["ended"] <= ended, reopened
    assert sum(reopened.values()) == reopened["ended"], reopened  # only clean ends, no in_use
