"""Integration fixtures: one moto server process per session on 127.0.0.1, unique resource
names per test, worker and CLI processes, and synchronous botocore clients for assertions."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import orjson
import pytest

from consumer.local import WorkerProcess, aws_env, moto_process

pytestmark = pytest.mark.integration

LEASE_DURATION_S = 4.0


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    with moto_process(log) as endpoint:
        yield endpoint
    log.close()


@dataclasses.dataclass
class Stack:
    """One test's stream and tables on the shared moto server, plus helpers to drive them."""

    env: dict[str, str]
    stream: str
    table: str
    lease_table: str
    dlq_table: str
    log_dir: Path
    kinesis: Any
    dynamodb: Any
    workers: list[WorkerProcess] = dataclasses.field(default_factory=list)

    def cli(
        self, *args: str, timeout: float = 60, **extra_env: str | None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m ARGS`` with this stack's environment; a None value unsets a variable."""
        env = {**os.environ, **self.env, **extra_env}
        return subprocess.run(
            [sys.executable, "-m", *args],
            env={k: v for k, v in env.items() if v is not None},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def setup(self, shards: int = 2) -> None:
        done = self.cli("consumer", "setup", TELEMAX_SHARDS=str(shards))
        assert done.returncode == 0, done.stderr

    def worker(self, worker_id: str, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(worker_id, {**self.env, **extra_env}, self.log_dir)
        self.workers.append(worker)
        return worker

    def put(self, readings: list[dict[str, Any]] | list[bytes], key: str | None = None) -> None:
        """PutRecords, one call in flight (moto loses records under concurrent calls)."""
        for start in range(0, len(readings), 500):
            chunk = readings[start : start + 500]
            records = [
                {
                    "Data": r if isinstance(r, bytes) else orjson.dumps(r),
                    "PartitionKey": key or (r["hardwareID"] if isinstance(r, dict) else "pk"),
                }
                for r in chunk
            ]
            answer = self.kinesis.put_records(StreamName=self.stream, Records=records)
            assert answer["FailedRecordCount"] == 0

    def scan(self, table: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": table or self.table}
        while True:
            page = self.dynamodb.scan(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def count(self, table: str | None = None) -> int:
        total = 0
        kwargs: dict[str, Any] = {"TableName": table or self.table, "Select": "COUNT"}
        while True:
            page = self.dynamodb.scan(**kwargs)
            total += page["Count"]
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def leases(self) -> dict[str, dict[str, Any]]:
        return {item["leaseKey"]["S"]: item for item in self.scan(self.lease_table)}

    def owners(self) -> dict[str, str | None]:
        return {k: v.get("leaseOwner", {}).get("S") for k, v in self.leases().items()}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def readings(n: int, prefix: str = "HW", offset: int = 0) -> list[dict[str, Any]]:
    """``n`` valid TELEMAX readings over 40 devices with unique keys."""
    return [
        {
            "hardwareID": f"{prefix}-{i % 40:03d}",
            "Timestamp": f"2026-01-01T00:{(i // 40) // 60 % 60:02d}:{(i // 40) % 60:02d}.{i:06d}Z",
            "Data1": f"LNK-{i % 7}",
            "Data2": round(10 + i * 0.5, 2),
            "Data3": i % 97 + 0.25,
        }
        for i in range(offset, offset + n)
    ]


def keys_of(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(i["hardwareID"]["S"], i["Timestamp"]["S"]) for i in items}


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **aws_env(moto_endpoint),
        "TELEMAX_STREAM": f"stream-{suffix}",
        "TELEMAX_TABLE": f"TELEMAX-{suffix}",
        "TELEMAX_LEASE_TABLE": f"leases-{suffix}",
        "TELEMAX_DLQ_TABLE": f"deadletter-{suffix}",
        "TELEMAX_LEASE_DURATION_S": str(LEASE_DURATION_S),
        "TELEMAX_IDLE_POLL_S": "0.2",
        "TELEMAX_CHECKPOINT_INTERVAL_S": "0.5",
        "TELEMAX_SHUTDOWN_GRACE_S": "10",
        "TELEMAX_LOG_LEVEL": "debug",
    }
    session = botocore.session.get_session()
    kwargs = {
        "endpoint_url": moto_endpoint,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    s = Stack(
        env=env,
        stream=env["TELEMAX_STREAM"],
        table=env["TELEMAX_TABLE"],
        lease_table=env["TELEMAX_LEASE_TABLE"],
        dlq_table=env["TELEMAX_DLQ_TABLE"],
        log_dir=tmp_path,
        kinesis=session.create_client("kinesis", **kwargs),
        dynamodb=session.create_client("dynamodb", **kwargs),
    )
    yield s
    for worker in s.workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()
