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

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from devkit.local import WorkerProcess, aws_env, local_client, scrape_or_nothing
from devkit.netns import KINESIS_LOCAL_TLS_PORT
from kernel.kpl.encode import Entry, aggregate
from tests.integration.conftest import Backends
from tests.support import readings

pytestmark = pytest.mark.timeout(150)
_named = itertools.count()


class Fanout:
    """One test's stream, tables and stream consumer (names of its own) on the backends."""

    def __init__(
        self,
        backends: Backends,
        logs: Path,
        *,
        workers_kinesis: str | None = None,  # where workers reach Kinesis (default: plain)
    ):
        self.network = backends.network
        self.logs = logs
        n = next(_named)
        self.stream, self.table = f"fanout-stream-{n}", f"records-{n}"
        self.lease_table = f"leases-{n}"
        kinesis, dynamodb = backends.kinesis, backends.dynamodb
        self.env = {
            **aws_env(kinesis),
            "AWS_ENDPOINT_URL_KINESIS": workers_kinesis or kinesis,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
            "TELEMAX_STREAM": self.stream,
            "TELEMAX_TABLE": self.table,
            "TELEMAX_LEASE_TABLE": self.lease_table,
            "TELEMAX_DLQ_TABLE": f"deadletter-{n}",
            "TELEMAX_SHARDS": "2",
            "TELEMAX_RETRIEVAL": "fanout",
            "TELEMAX_LEASE_DURATION_S": "3",
            "TELEMAX_CHECKPOINT_INTERVAL_S": "1",
        }
        self.kinesis = kinesis
        self.dynamodb = dynamodb
        self.started: list[WorkerProcess] = []  # their logs end a timeout's message

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
        started = WorkerProcess(name, self.env, self.logs, popen=self.network.popen)
        self.started.append(started)
        return started

    def put(self, count: int, prefix: str) -> set[str]:
        batch = readings(count, prefix=prefix)

        def put() -> None:
            client = local_client("kinesis", self.kinesis)
            for at in range(0, len(batch), 100):
                chunk = batch[at : at + 100]
                answer = client.put_records(
                    StreamName=self.stream,
                    Records=[
                        {"Data": orjson.dumps(r), "PartitionKey": r["hardwareID"]} for r in chunk
                    ],
                )
                # a record refused would be waited for in vain: say so at once
                assert not answer.get("FailedRecordCount"), answer["Records"]

        self.network.run(put, timeout=30)
        return {r["hardwareID"] for r in batch}

    def stored(self) -> set[str]:
        def scan() -> set[str]:
            client = local_client("dynamodb", self.dynamodb)
            found: set[str] = set()
            for page in client.get_paginator("scan").paginate(TableName=self.table):
                found |= {item["hardwareID"]["S"] for item in page["Items"]}
            return found

        return self.network.run(scan, timeout=30)

    def put_aggregated(self, count: int, prefix: str) -> int:
        """``count`` readings KPL-aggregated (a partition key a device: both shards get some,
        several user records a Kinesis record); the Kinesis records put."""
        entries = [Entry(orjson.dumps(r), r["hardwareID"]) for r in readings(count, prefix=prefix)]
        packed = list(aggregate(entries, max_bytes=2048))

        def put() -> None:
            client = local_client("kinesis", self.kinesis)
            for entry in packed:
                client.put_record(
                    StreamName=self.stream, Data=entry.data, PartitionKey=entry.partition_key
                )

        self.network.run(put, timeout=60)
        return len(packed)

    def checkpoints(self) -> dict[str, tuple[str, int]]:
        def scan() -> dict[str, tuple[str, int]]:
            client = local_client("dynamodb", self.dynamodb)
            items = client.scan(TableName=self.lease_table)["Items"]
            return {
                i["leaseKey"]["S"]: (
                    i["checkpoint"]["S"],
                    int(i.get("checkpointSubSequenceNumber", {"N": "0"})["N"]),
                )
                for i in items
            }

        return self.network.run(scan, timeout=30)

    def count(self) -> int:
        """Items in the records table (each reading has a key of its own)."""

        def scan() -> int:
            client = local_client("dynamodb", self.dynamodb)
            pages = client.get_paginator("scan").paginate(TableName=self.table, Select="COUNT")
            return sum(int(page["Count"]) for page in pages)

        return self.network.run(scan, timeout=30)

    def metrics(self, worker: WorkerProcess) -> dict[str, float]:
        return self.network.run(lambda: scrape_or_nothing(worker.metrics_port), timeout=10)

    def until(self, condition: Callable[[], bool], limit: float, what: str) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert time.monotonic() < deadline, f"not within {limit} s: {what}" + self._logs()
            time.sleep(0.5)

    def _logs(self, lines: int = 25) -> str:
        """The last lines of each worker's log and the lease table (what a failure in CI
        leaves to read)."""
        logs = "".join(
            f"\n--- {w.worker_id}'s log, last {lines} lines:\n" + "\n".join(w.log_lines()[-lines:])
            for w in self.started
            if w.log_path.exists()
        )
        return f"{logs}\n--- the lease table:\n{self._leases()}"

    def _leases(self) -> str:
        def scan() -> list[dict[str, Any]]:
            client = local_client("dynamodb", self.dynamodb)
            return list(client.scan(TableName=self.lease_table)["Items"])

        try:
            items = self.network.run(scan, timeout=10)
        except Exception as exc:  # the message must not fail in its turn
            return f"(not read: {exc!r})"
        return "\n".join(
            " ".join(f"{name}={next(iter(value.values()))}" for name, value in sorted(i.items()))
            for i in items
        )


@pytest.fixture
def fanout(backends: Backends, tmp_path: Path) -> Fanout:
    setup = Fanout(backends, tmp_path)
    done = setup.command("setup")
    assert done.returncode == 0, done.stdout
    return setup


def test_kinesis_local_is_reachable_only_inside_its_network(backends: Backends) -> None:
    assert backends.network.reachable(4568)
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
    fanout.env["TELEMAX_FAST_PATH"] = "false"  # the replacement on aiobotocore's clients
    replacement = fanout.worker("w2")
    try:
        fanout.until(
            lambda: fanout.stored() >= first | second, 60, "every record stored after the kill"
        )
    finally:
        assert replacement.stop() == 0, "\n".join(replacement.log_lines()[-20:])
    started = [line for line in replacement.log_lines() if "worker_started" in line]
    assert started and "fanout" in started[0], started
    for process, lean in ((worker, True), (replacement, False)):
        (clients,) = [json.loads(line) for line in process.log_lines() if "aws_clients" in line]
        assert clients["lean"] is lean, clients
    gone = fanout.command("fanout", "deregister")
    assert gone.returncode == 0 and "deregistered" in gone.stdout, gone.stdout
    again = fanout.command("fanout", "show")
    assert "not registered" in again.stdout, again.stdout


@pytest.fixture
def over_tls(backends: Backends, tmp_path: Path) -> tuple[Fanout, Path]:
    """Workers reach kinesis-local over HTTPS (its certificate from a private CA), and the
    setup trusts that CA through AWS_CA_BUNDLE."""
    https = f"https://127.0.0.1:{KINESIS_LOCAL_TLS_PORT}"
    setup = Fanout(backends, tmp_path, workers_kinesis=https)
    setup.env["AWS_CA_BUNDLE"] = str(backends.ca)
    done = setup.command("setup")
    assert done.returncode == 0, done.stdout
    return setup, backends.ca


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


def test_kpl_aggregates_over_fanout_resume_inside_an_aggregate(fanout: Fanout) -> None:
    """KPL-aggregated records read through subscriptions are de-aggregated, and a checkpoint
    inside an aggregate (its sub-sequence number) resumes there, as with polling: a second
    worker writes nothing again."""
    packed = fanout.put_aggregated(400, "KPL-")
    assert packed < 400 / 4, "several user records a Kinesis record"
    worker = fanout.worker("w1")
    try:
        fanout.until(lambda: fanout.count() == 400, 60, "every user record stored")

        def inside_aggregates() -> bool:
            found = fanout.checkpoints()
            return len(found) == 2 and all(sub > 0 for _, sub in found.values())

        fanout.until(inside_aggregates, 30, "each shard checkpointed inside an aggregate")
    finally:
        assert worker.stop() == 0, "\n".join(worker.log_lines()[-20:])
    again = fanout.worker("w2")
    try:
        fanout.until(lambda: bool(fanout.metrics(again)), 30, "the second worker up")
        time.sleep(2)
        assert fanout.metrics(again).get("telemax_records_written_total", 0) == 0
    finally:
        assert again.stop() == 0
