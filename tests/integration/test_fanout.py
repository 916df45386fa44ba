"""Enhanced fan-out end to end on kinesis-local (SubscribeToShard over HTTP/2, h2c on its
plain port), in a private network namespace with dynalite beside it: a worker registers the
stream consumer, subscribes to every shard, stores every record; a worker SIGKILLed is
replaced and nothing is lost; the operator's command shows and deregisters the consumer; a
lease taken from a frozen owner waits out its subscription (ResourceInUseException); over TLS
(ALPN h2) with a private CA named by AWS_CA_BUNDLE.

What kinesis-local cannot show (tests/emulators/kinesis-local-fanout.md): a shard's end over a
subscription (it never sends ChildShards) — covered against the scripted HTTP/2 server
(tests/unit/consumer/fanout). Its 5-minute expiry is shortened by a proxy in
test_fanout_expiry.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from devkit.certs import make_certificates
from devkit.local import WorkerProcess, aws_env, local_client, scrape_or_nothing
from devkit.netns import (
    KINESIS_LOCAL,
    KINESIS_LOCAL_TLS_PORT,
    PrivateNetwork,
    fanout_backends,
    unavailable,
)
from tests.support import readings

pytestmark = pytest.mark.timeout(150)
STREAM = "fanout-stream"


class Fanout:
    def __init__(
        self,
        network: PrivateNetwork,
        kinesis: str,
        dynamodb: str,
        logs: Path,
        *,
        workers_kinesis: str | None = None,  # where workers reach Kinesis (default: kinesis)
    ):
        self.network = network
        self.logs = logs
        self.env = {
            **aws_env(kinesis),
            "AWS_ENDPOINT_URL_KINESIS": workers_kinesis or kinesis,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
            "TELEMAX_STREAM": STREAM,
            "TELEMAX_SHARDS": "2",
            "TELEMAX_RETRIEVAL": "fanout",
            "TELEMAX_LEASE_DURATION_S": "3",
            "TELEMAX_CHECKPOINT_INTERVAL_S": "1",
        }
        self.kinesis = kinesis
        self.dynamodb = dynamodb

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.network.popen(
            [sys.executable, "-m", "consumer", *args],
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        out, _ = proc.communicate(timeout=60)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")

    def worker(self, name: str) -> WorkerProcess:
        return WorkerProcess(name, self.env, self.logs, popen=self.network.popen)

    def put(self, count: int, prefix: str) -> set[str]:
        batch = readings(count, prefix=prefix)

        def put() -> None:
            client = local_client("kinesis", self.kinesis)
            for at in range(0, len(batch), 100):
                chunk = batch[at : at + 100]
                client.put_records(
                    StreamName=STREAM,
                    Records=[
                        {"Data": orjson.dumps(r), "PartitionKey": r["hardwareID"]} for r in chunk
                    ],
                )

        self.network.run(put, timeout=30)
        return {r["hardwareID"] for r in batch}

    def stored(self) -> set[str]:
        def scan() -> set[str]:
            client = local_client("dynamodb", self.dynamodb)
            found: set[str] = set()
            for page in client.get_paginator("scan").paginate(TableName="TELEMAX"):
                found |= {item["hardwareID"]["S"] for item in page["Items"]}
            return found

        return self.network.run(scan, timeout=30)

    def count(self) -> int:
        """Items in the records table (each reading has a key of its own)."""

        def scan() -> int:
            client = local_client("dynamodb", self.dynamodb)
            pages = client.get_paginator("scan").paginate(TableName="TELEMAX", Select="COUNT")
            return sum(int(page["Count"]) for page in pages)

        return self.network.run(scan, timeout=30)

    def metrics(self, worker: WorkerProcess) -> dict[str, float]:
        return self.network.run(lambda: scrape_or_nothing(worker.metrics_port), timeout=10)

    def until(self, condition: Callable[[], bool], limit: float, what: str) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, f"not within {limit} s: {what}"
            time.sleep(0.5)


def require_kinesis_local() -> None:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    if not (KINESIS_LOCAL / "main.js").is_file():
        pytest.fail("kinesis-local is not installed: run `make emulators` (make test does it)")


@pytest.fixture
def fanout(tmp_path: Path) -> Iterator[Fanout]:
    require_kinesis_local()
    with fanout_backends(tmp_path) as (network, kinesis, dynamodb):
        setup = Fanout(network, kinesis, dynamodb, tmp_path)
        done = setup.command("setup")
        assert done.returncode == 0, done.stdout
        yield setup


def test_kinesis_local_is_reachable_only_inside_its_network(fanout: Fanout) -> None:
    assert fanout.network.reachable(4568)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", 4568), 1):
        pass  # the machine's own loopback: nothing listens there


def test_a_fanout_worker_stores_every_record_and_a_replacement_loses_none(
    fanout: Fanout,
) -> None:
    first = fanout.put(300, "FAN-A-")
    worker = fanout.worker("w1")
    try:
        fanout.until(lambda: fanout.stored() >= first, 60, "the first records stored")
        shown = fanout.command("fanout", "show")
        assert shown.returncode == 0 and "ACTIVE" in shown.stdout, shown.stdout
        metrics = fanout.metrics(worker)
        assert metrics.get("telemax_fanout_subscriptions_total", 0) >= 2  # one a shard at least
        assert metrics.get("telemax_records_written_total", 0) >= len(first)
        worker.signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        worker.stop()
    second = fanout.put(200, "FAN-B-")
    replacement = fanout.worker("w2")
    try:
        fanout.until(
            lambda: fanout.stored() >= first | second, 60, "every record stored after the kill"
        )
    finally:
        assert replacement.stop() == 0, "\n".join(replacement.log_lines()[-20:])
    started = [line for line in replacement.log_lines() if "worker_started" in line]
    assert started and "fanout" in started[0], started
    gone = fanout.command("fanout", "deregister")
    assert gone.returncode == 0 and "deregistered" in gone.stdout, gone.stdout
    again = fanout.command("fanout", "show")
    assert "not registered" in again.stdout, again.stdout


@pytest.fixture
def over_tls(tmp_path: Path) -> Iterator[tuple[Fanout, Path]]:
    """kinesis-local serving HTTPS with a certificate from a private CA; workers reach it
    there, and the setup trusts that CA through AWS_CA_BUNDLE."""
    require_kinesis_local()
    certs = make_certificates(tmp_path / "certs")
    config = {"KINESIS_MOCK_CERT_PATH": str(certs.kinesis_local_config(tmp_path))}
    with fanout_backends(tmp_path, kinesis_env=config) as (network, kinesis, dynamodb):
        https = f"https://127.0.0.1:{KINESIS_LOCAL_TLS_PORT}"
        setup = Fanout(network, kinesis, dynamodb, tmp_path, workers_kinesis=https)
        setup.env["AWS_CA_BUNDLE"] = str(certs.ca)
        done = setup.command("setup")
        assert done.returncode == 0, done.stdout
        yield setup, certs.ca


def test_fanout_and_polling_over_tls_trust_the_same_ca_bundle_as_botocore(
    over_tls: tuple[Fanout, Path],
) -> None:
    """HTTP/2 with ALPN over TLS (fan-out) and the lean HTTP/1.1 path (polling) verify the
    server against AWS_CA_BUNDLE, as the generic clients do, and both store everything (a
    server outside the bundle is refused: tests/unit/consumer/adapters/test_tls.py). A
    bundle that does not exist stops start-up with one line naming it."""
    fanout, bundle = over_tls
    fanout.env["AWS_CA_BUNDLE"] = "/nonexistent/telemax/ca.pem"
    refused = fanout.command("run")
    assert refused.returncode == 2, refused.stdout
    assert refused.stdout.count("\n") == 1 and "AWS_CA_BUNDLE" in refused.stdout, refused.stdout
    fanout.env["AWS_CA_BUNDLE"] = str(bundle)
    first = fanout.put(200, "TLS-A-")
    worker = fanout.worker("w1")
    try:
        fanout.until(lambda: fanout.stored() >= first, 60, "records stored over fan-out TLS")
        metrics = fanout.metrics(worker)
        assert metrics.get("telemax_fanout_subscriptions_total", 0) >= 2
    finally:
        assert worker.stop() == 0, "\n".join(worker.log_lines()[-20:])
    fanout.env["TELEMAX_RETRIEVAL"] = "polling"
    second = fanout.put(200, "TLS-B-")
    poller = fanout.worker("w2")
    try:
        fanout.until(lambda: fanout.stored() >= first | second, 60, "stored polling over TLS")
    finally:
        assert poller.stop() == 0, "\n".join(poller.log_lines()[-20:])
    started = [line for line in poller.log_lines() if "worker_started" in line]
    assert started and "polling" in started[0], started


def test_a_lease_taken_from_a_frozen_owner_waits_out_its_subscription(fanout: Fanout) -> None:
    """A worker frozen (SIGSTOP) keeps its subscriptions open while its leases expire: the
    next owner is answered ResourceInUseException, backs off and subscribes again, and once
    the frozen one is gone (its connection closed) it reads on and loses nothing."""
    first = fanout.put(200, "RIU-A-")
    frozen = fanout.worker("w1")
    try:
        fanout.until(lambda: fanout.stored() >= first, 60, "the first records stored")
        frozen.signal(signal.SIGSTOP)
        second = fanout.put(200, "RIU-B-")
        taker = fanout.worker("w2")
        try:

            def refused_in_use() -> bool:
                return any("in_use" in line for line in taker.log_lines())

            fanout.until(refused_in_use, 45, "the taker refused with ResourceInUseException")
            assert not fanout.stored() >= second, "read while the frozen owner subscribed"
            frozen.signal(signal.SIGKILL)
            fanout.until(lambda: fanout.stored() >= first | second, 60, "all stored after")
            metrics = fanout.metrics(taker)
            assert metrics.get("telemax_fanout_resubscriptions_total", 0) >= 1
        finally:
            assert taker.stop() == 0, "\n".join(taker.log_lines()[-20:])
    finally:
        frozen.signal(signal.SIGKILL)
        frozen.stop()
