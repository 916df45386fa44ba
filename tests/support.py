"""What the integration suites share: a per-test stack of stream and tables on some local
endpoint, worker and CLI processes, synchronous botocore clients for assertions, data."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from consumer import config
from consumer.adapters import fastpath
from consumer.ops.provision import Report, TableSpec, ensure_table, table_specs
from devkit.local import WorkerProcess, aws_env, local_client, metrics_text, sample
from kernel.aws import Clients

LEASE_DURATION_S = 4.0


@dataclasses.dataclass
class Stack:
    """One test's stream and tables on the shared moto server, plus helpers to drive them."""

    env: dict[str, str]
    stream: str
    table: str
    lease_table: str
    member_table: str
    dlq_table: str
    log_dir: Path
    kinesis: Any
    dynamodb: Any
    workers: list[WorkerProcess] = dataclasses.field(default_factory=list)

    def cli(
        self,
        *args: str,
        timeout: float = 60,
        environment: Mapping[str, str | None] | None = None,
        **extra_env: str | None,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m ARGS`` with this stack's environment, ``environment`` and ``extra_env``
        on top; a None value unsets a variable."""
        env = {**os.environ, **self.env, **(environment or {}), **extra_env}
        return subprocess.run(
            [sys.executable, "-m", *args],
            env={k: v for k, v in env.items() if v is not None},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def setup(self, shards: int = 2, **extra_env: str) -> None:
        provision({**self.env, **extra_env}, shards)

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
            total += int(page["Count"])
            if "LastEvaluatedKey" not in page:
                return total
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def leases(self) -> dict[str, dict[str, Any]]:
        return {item["leaseKey"]["S"]: item for item in self.scan(self.lease_table)}

    def shard_records(self) -> dict[str, list[dict[str, Any]]]:
        """Every Kinesis record of the stream by shard id, each shard's in order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for shard in self.kinesis.list_shards(StreamName=self.stream)["Shards"]:
            iterator = self.kinesis.get_shard_iterator(
                StreamName=self.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records = out.setdefault(shard["ShardId"], [])
            while True:
                answer = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                records.extend(answer["Records"])
                if not answer["Records"]:
                    break
                iterator = answer["NextShardIterator"]
        return out

    def stream_records(self) -> list[dict[str, Any]]:
        """Every record of the stream, in shard order (shards in id order)."""
        return [r for _, rs in sorted(self.shard_records().items()) for r in rs]

    def owners(self) -> dict[str, str | None]:
        return {k: v.get("leaseOwner", {}).get("S") for k, v in self.leases().items()}


class AlertTopic:
    """A topic with an SQS queue subscribed to it, and the alert ledger table."""

    def __init__(self, stack: Stack, endpoint: str, fifo: bool = False) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.sns = local_client("sns", endpoint)
        self.sqs = local_client("sqs", endpoint)
        name = f"alerts-{suffix}" + (".fifo" if fifo else "")
        attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        self.arn: str = self.sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
        queue_attributes = {"FifoQueue": "true"} if fifo else {}
        self.queue_url: str = self.sqs.create_queue(
            QueueName=f"inbox-{suffix}" + (".fifo" if fifo else ""), Attributes=queue_attributes
        )["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=queue_arn)
        self.ledger = f"alerts-ledger-{suffix}"
        stack.dynamodb.create_table(
            TableName=self.ledger,
            KeySchema=[{"AttributeName": "alertId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "alertId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        self.dynamodb = stack.dynamodb

    def received(self) -> list[dict[str, Any]]:
        """Every notification delivered so far (SNS's envelope, parsed)."""
        found: list[dict[str, Any]] = []
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                self.sqs.delete_message(
                    QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )


def check_alerts_once(
    received: list[dict[str, Any]], expected: set[str], taker: WorkerProcess
) -> None:
    """Every expected key alerted; a second message only where the ``taker`` took over a
    claim left by a killed worker (the documented gap: it may have died between SNS's answer
    and its mark) — never otherwise."""
    keys = [m["MessageAttributes"]["key"]["Value"] for m in received]
    assert set(keys) == expected, "every matching record alerted"
    repeated = len(keys) - len(set(keys))
    text = metrics_text(taker.metrics_port)
    taken_over = sample(text, "telemax_alerts_total", outcome="taken_over")
    assert repeated <= taken_over, f"{repeated} repeats, {taken_over} claims taken over"


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
    """``n`` valid TELEMAX readings over 40 devices, keys unique for a given prefix."""
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


def create_orders_table(dynamodb: Any, name: str) -> str:
    """A records table keyed by ``orderID`` alone (not TELEMAX's key), on demand."""
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "orderID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "orderID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


def keys_of(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(i["hardwareID"]["S"], i["Timestamp"]["S"]) for i in items}


def make_stack(
    tmp_path: Path,
    *,
    kinesis_endpoint: str,
    dynamodb_endpoint: str,
    lease_duration_s: float = LEASE_DURATION_S,
    **extra_env: str,
) -> Stack:
    """A stack with unique names; Kinesis and DynamoDB may live on different endpoints."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **aws_env(kinesis_endpoint),
        "AWS_ENDPOINT_URL_KINESIS": kinesis_endpoint,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_endpoint,
        "TELEMAX_STREAM": f"stream-{suffix}",
        "TELEMAX_TABLE": f"TELEMAX-{suffix}",
        "TELEMAX_LEASE_TABLE": f"leases-{suffix}",
        "TELEMAX_MEMBER_TABLE": f"members-{suffix}",
        "TELEMAX_DLQ_TABLE": f"deadletter-{suffix}",
        "TELEMAX_LEASE_DURATION_S": str(lease_duration_s),
        "TELEMAX_IDLE_POLL_S": "0.2",
        "TELEMAX_CHECKPOINT_INTERVAL_S": "0.5",
        "TELEMAX_SHUTDOWN_GRACE_S": "10",
        "TELEMAX_LOG_LEVEL": "debug",
        **extra_env,
    }
    return Stack(
        env=env,
        stream=env["TELEMAX_STREAM"],
        table=env["TELEMAX_TABLE"],
        lease_table=env["TELEMAX_LEASE_TABLE"],
        member_table=env["TELEMAX_MEMBER_TABLE"],
        dlq_table=env["TELEMAX_DLQ_TABLE"],
        log_dir=tmp_path,
        kinesis=local_client("kinesis", kinesis_endpoint),
        dynamodb=local_client("dynamodb", dynamodb_endpoint),
    )


def kill_all(stack: Stack) -> None:
    for worker in stack.workers:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


class BackgroundProducer:
    """Writes valid readings to the stream from a thread until stopped, one call in flight,
    remembering every acknowledged key. ``rate`` is records per second."""

    def __init__(self, stack: Stack, rate: float = 400.0, batch: int = 40, prefix: str = "BG"):
        self._stack = stack
        self._interval = batch / rate
        self._batch = batch
        self._prefix = prefix
        self.keys: set[tuple[str, str]] = set()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def __enter__(self) -> BackgroundProducer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> set[tuple[str, str]]:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.errors:
            raise AssertionError(f"producer failed: {self.errors[0]!r}")
        return self.keys

    def _run(self) -> None:
        offset = 0
        while not self._stop.is_set():
            started = time.monotonic()
            chunk = readings(self._batch, prefix=self._prefix, offset=offset)
            offset += self._batch
            try:
                self._stack.put(chunk)
            except Exception as exc:
                self.errors.append(exc)
                return
            self.keys.update((r["hardwareID"], r["Timestamp"]) for r in chunk)
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))


@dataclasses.dataclass(frozen=True)
class Event:
    at: float  # POSIX seconds (all processes share this host's clock)
    worker: str
    name: str
    fields: dict[str, Any]


def worker_events(*workers: WorkerProcess) -> list[Event]:
    """Every structured log event of the given workers, in time order."""
    found: list[Event] = []
    for worker in workers:
        for line in worker.log_lines():
            if not line.startswith("{"):
                continue
            data = orjson.loads(line)
            at = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
            found.append(Event(at, worker.worker_id, data["event"], data))
    return sorted(found, key=lambda e: e.at)


ITEM_PATHS = ("generic", "lean")  # the lease tables' item calls: aiobotocore, or JsonClient


@contextlib.asynccontextmanager
async def lean_path(clients: Clients) -> AsyncIterator[fastpath.FastPath]:
    """The lean path to the endpoints ``clients`` speak to, with their credentials."""
    credentials = await clients.session.get_credentials()
    assert credentials is not None
    fast = fastpath.create(
        credentials,
        kinesis_endpoint=clients.kinesis.meta.endpoint_url,
        dynamodb_endpoint=clients.dynamodb.meta.endpoint_url,
        region=clients.dynamodb.meta.region_name,
        pool=4,
        read_timeout=10,
    )
    try:
        yield fast
    finally:
        fast.close()


def provision(env: Mapping[str, str], shards: int = 2) -> None:
    """The stream and the tables ``consumer setup`` would create for ``env``, made from this
    process (a ``setup`` process costs a test 1.5 s; tests/integration/test_setup.py runs the
    command itself). TTL is left off: it only expires items."""
    settings = config.load("setup", env={**env, "TELEMAX_SHARDS": str(shards)})
    default = env["AWS_ENDPOINT_URL"]
    kinesis = local_client("kinesis", env.get("AWS_ENDPOINT_URL_KINESIS", default))
    dynamodb = local_client("dynamodb", env.get("AWS_ENDPOINT_URL_DYNAMODB", default))
    specs = table_specs(settings)
    # As the command, what exists already is kept.
    with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName=settings.stream, ShardCount=settings.shards)
    for spec in specs:
        with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
            dynamodb.create_table(**spec.create_args())

    def active() -> bool:
        summary = kinesis.describe_stream_summary(StreamName=settings.stream)
        if summary["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            return False
        return all(
            dynamodb.describe_table(TableName=spec.name)["Table"]["TableStatus"] == "ACTIVE"
            for spec in specs
        )

    wait_until(active, 30, "the stream and tables ACTIVE", every=0.05)


async def create_coordination_tables(clients: Clients, stack: Stack) -> None:
    """The lease and member tables of ``stack``, as ``setup`` creates them (in process: the
    repository suites need nothing else, and a ``setup`` process costs a second and a half)."""
    for spec in (
        TableSpec("leases", stack.lease_table, (("leaseKey", "HASH"),)),
        TableSpec("members", stack.member_table, (("workerId", "HASH"),)),
    ):
        await ensure_table(clients, spec, Report())


@contextlib.asynccontextmanager
async def item_client(clients: Clients, path: str) -> AsyncIterator[Any]:
    """The DynamoDB client the lease and membership repositories get on ``path``."""
    if path == "generic":
        yield clients.dynamodb
        return
    async with lean_path(clients) as fast:
        yield fast.items(clients.dynamodb)


def archived(s3: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Every JSON line of the archive, by part (records, deadletters)."""
    found: dict[str, list[dict[str, Any]]] = {"records": [], "deadletters": []}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for entry in page.get("Contents", []):
            key = entry["Key"]
            part = key.split("/")[1]
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            found[part] += [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return found
