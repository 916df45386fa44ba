"""``demo --feed orders|taxi``: a feed end to end on an embedded moto server, with every
destination: valid records stored, bad ones dead-lettered with their reasons, matching ones
alerted (read back from an SQS queue subscribed to the alert topic), everything archived in S3
(the objects listed and read back).

Exit code 0 only when every valid record is stored, every bad one dead-lettered, every alert
received exactly once and every record archived exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gzip
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from consumer import config
from consumer.feeds import load_feed
from consumer.ops.insights import insights
from consumer.ops.provision import setup
from consumer.pipeline.alerts import compile_rules
from devkit.demo import count
from devkit.local import WorkerProcess, aws_env, moto_in_process
from kernel.aws import Clients, open_clients
from kernel.kpl.encode import Entry
from producer.schemas import records
from producer.shipper import Shipper

BAD_EVERY = 40  # one record in forty is made invalid, each feed its own way
WAIT_S = 90.0
BUCKET = "telemax-demo-archive"


def say(line: str = "") -> None:
    print(line, flush=True)


def spoil(feed: str, record: dict[str, Any], n: int) -> dict[str, Any]:
    """A record a shop (or a taxi company) must refuse, one of three ways."""
    if feed == "orders":
        return [
            {**record, "total": round(record["total"] + 0.01, 2)},  # total_mismatch
            {**record, "currency": "XXX"},  # unknown_currency
            {**record, "items": []},  # no_items
        ][n % 3]
    return [
        {**record, "dropoffTime": record["pickupTime"]},  # dropoff_not_after_pickup
        {**record, "fareAmount": -1.0},  # negative_fare
        {**record, "paymentType": "barter"},  # unknown_payment_type
    ][n % 3]


# Trips per hour of a day, as a city's: a morning and an evening peak.
DAY_SHAPE = (2, 1, 1, 1, 1, 2, 4, 8, 10, 7, 5, 5, 6, 5, 5, 6, 8, 10, 12, 9, 7, 5, 4, 3)
LATENESS_S = 2 * 86_400  # the demo replays the last day's trips: they are not late


def yesterdays_trip(trip: dict[str, Any], n: int) -> dict[str, Any]:
    """The trip moved into the last 24 hours, at an hour drawn from ``DAY_SHAPE``."""
    pickup = datetime.fromisoformat(trip["pickupTime"])
    ride = datetime.fromisoformat(trip["dropoffTime"]) - pickup
    hours = [h for h, weight in enumerate(DAY_SHAPE) for _ in range(weight)]
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    when = day + timedelta(hours=hours[(n * 7919) % len(hours)], seconds=(n * 37) % 3600)
    stamp = "%Y-%m-%dT%H:%M:%S.%fZ"
    return {
        **trip,
        "pickupTime": when.strftime(stamp),
        "dropoffTime": (when + ride).strftime(stamp),
    }


def produce(feed: str, total: int) -> Iterator[tuple[dict[str, Any], str, bool]]:
    """(record, partition key, valid) for the demo; orders kept small for moto's sake."""
    for n, (record, key) in enumerate(records(feed, total, devices=200, seed=7)):
        if feed == "orders" and len(record["items"]) > 20:  # a bulk order, shortened
            record["items"] = record["items"][:20]
            total_amount = sum(
                Decimal(repr(i["unitPrice"])) * i["quantity"] for i in record["items"]
            )
            record["total"] = float(total_amount.quantize(Decimal("0.01")))
            record["itemCount"] = sum(i["quantity"] for i in record["items"])
        if feed == "taxi":
            record = yesterdays_trip(record, n)
        if n % BAD_EVERY == BAD_EVERY - 1:
            yield spoil(feed, record, n // BAD_EVERY), key, False
        else:
            yield record, key, True


def report_span(now: datetime) -> dict[str, str]:
    """The insights the demo reports: the last eight days, and up to a day ahead — the
    producer dates records from its start on (orders 100 ms apart: 800 reach 80 s past it),
    so near the turn of an hour the newest window starts after the demo's ``now``, and a
    report ending at ``now`` left its records out (CI: 60 of 780 counted at 10:59:5x)."""
    return {
        "start": (now - timedelta(days=8)).isoformat(),
        "end": (now + timedelta(days=1)).isoformat(),
    }


class FeedDemo:
    def __init__(self, feed: str, count: int = 2000, shards: int = 2, workers: int = 2) -> None:
        self.feed = load_feed(feed)
        self.count = count
        self.shards = shards
        self.worker_count = workers
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"telemax-demo-{feed}-"))
        self.settings = config.load(
            "setup",
            env={"TELEMAX_FEED": feed, "TELEMAX_SHARDS": str(shards), "TELEMAX_INSIGHTS": "on"},
        )
        self._rules = compile_rules(dict(self.feed.alerts), f"feed {feed}")

    async def run(self) -> int:
        with moto_in_process() as endpoint:
            env = aws_env(endpoint)
            os.environ.update(env)
            say(f"telemax demo --feed {self.feed.name}: moto at {endpoint}; logs in {self.log_dir}")
            async with open_clients(services=("sns", "sqs", "s3")) as clients:
                for line in (await setup(clients, self.settings)).lines():
                    say(f"  setup: {line}")
                return await self._run(clients, env)

    async def _destinations(self, clients: Clients) -> tuple[str | None, str | None]:
        """The archive bucket; the alert topic and a queue subscribed to it (rules only)."""
        await clients.s3.create_bucket(Bucket=BUCKET)
        if not self.feed.alerts:
            return None, None
        topic = (await clients.sns.create_topic(Name=f"{self.feed.name}-alerts"))["TopicArn"]
        queue = await clients.sqs.create_queue(QueueName=f"{self.feed.name}-alert-inbox")
        attributes = await clients.sqs.get_queue_attributes(
            QueueUrl=queue["QueueUrl"], AttributeNames=["QueueArn"]
        )
        await clients.sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=attributes["Attributes"]["QueueArn"]
        )
        say(f"  alerts: topic {topic}, read back from queue {queue['QueueUrl']}")
        return topic, queue["QueueUrl"]

    async def _run(self, clients: Clients, env: dict[str, str]) -> int:
        topic, queue = await self._destinations(clients)
        produced = list(produce(self.feed.name, self.count))
        valid = [record for record, _, ok in produced if ok]
        key = self.feed.key_names[0]
        rules = list(self.feed.alerts)
        expected_alerts = {r[key] for r in valid if self._matches(r)}
        worker_env = {
            **env,
            "TELEMAX_FEED": self.feed.name,
            "TELEMAX_LEASE_DURATION_S": "6",
            "TELEMAX_LOG_LEVEL": "info",
            "TELEMAX_ARCHIVE_BUCKET": BUCKET,
            "TELEMAX_ARCHIVE_MAX_AGE_S": "2",
            "TELEMAX_INSIGHTS": "on",
            "TELEMAX_INSIGHTS_LATENESS_S": str(LATENESS_S),
            **({"TELEMAX_ALERT_TOPIC_ARN": topic} if topic else {}),
        }
        workers = [
            WorkerProcess(f"demo-worker-{n + 1}", worker_env, self.log_dir)
            for n in range(self.worker_count)
        ]
        say(
            f"  started {len(workers)} workers, producing {len(produced):,} {self.feed.name} "
            f"records ({len(produced) - len(valid)} invalid)"
        )
        started = time.monotonic()
        shipper = Shipper(clients.kinesis, self.settings.stream, concurrency=1)
        await shipper.ship(Entry(orjson.dumps(r), k) for r, k, _ in produced)
        stored = dead = 0
        invalid = len(produced) - len(valid)
        while time.monotonic() - started < WAIT_S:
            stored = await count(clients, self.settings.table)
            dead = await count(clients, self.settings.dlq_table)
            if stored >= len(valid) and dead >= invalid and await self._archived(clients, produced):
                break
            await asyncio.sleep(0.5)
        codes = [await asyncio.to_thread(worker.stop) for worker in workers]  # last flushes
        alerts = await self._alerts(clients, queue) if queue else []
        lines, objects = await self._archive(clients)
        return await self._summarise(
            clients, produced, valid, expected_alerts, rules, alerts, lines, objects, codes
        )

    async def _insights(self, clients: Clients) -> int:
        """Print the peak hours, write the charts, say where; answer the records counted
        (in a window or late)."""
        now = datetime.now(UTC)
        window = report_span(now)
        settings = dataclasses.replace(self.settings, insights=True)
        found = await insights(
            clients, settings, **window, by="hour", output="json", plot=None, now=now
        )
        rows = [orjson.loads(line) for line in found.splitlines()]
        counted = int(sum(row["count"] + row["late"] for row in rows))
        chart = self.log_dir / f"{self.feed.name}-insights.png"
        text = await insights(
            clients, settings, **window, by="hour", output="text", plot=str(chart), now=now
        )
        lines = text.splitlines()
        peak = lines[: lines.index("") if "" in lines else 6]
        say(f"  insights: {len(rows)} windows x groups, {counted:,} records counted")
        for line in peak[:7]:
            say(f"    {line}")
        say(f"    {lines[-1]}")
        return counted

    def _matches(self, record: dict[str, Any]) -> bool:
        """Whether the feed's rules alert on ``record`` (numbers as exact decimals, as the
        worker sees them)."""
        plain = {k: Decimal(repr(v)) if isinstance(v, float) else v for k, v in record.items()}
        return any(rule.matches(plain) for rule in self._rules)

    async def _alerts(self, clients: Clients, queue: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            answer = await clients.sqs.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = answer.get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(orjson.loads(message["Body"]))
                await clients.sqs.delete_message(
                    QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"]
                )

    async def _archived(self, clients: Clients, produced: list[Any]) -> bool:
        """Whether the archive holds a line for every record. The tables can be complete
        before it is: a worker whose lease lapsed (a slow backend) stored records whose
        segment it never committed, and their next owner reads them again from the
        checkpoint; stopping the workers before that would leave them out."""
        lines, _ = await self._archive(clients)
        return len(lines["records"]) + len(lines["deadletters"]) >= len(produced)

    async def _archive(self, clients: Clients) -> tuple[dict[str, list[Any]], list[str]]:
        lines: dict[str, list[Any]] = {"records": [], "deadletters": []}
        keys: list[str] = []
        paginator = clients.s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=BUCKET):
            for entry in page.get("Contents", []):
                keys.append(entry["Key"])
                body = await (await clients.s3.get_object(Bucket=BUCKET, Key=entry["Key"]))[
                    "Body"
                ].read()
                part = entry["Key"].split("/")[1]
                lines[part] += [orjson.loads(line) for line in gzip.decompress(body).splitlines()]
        return lines, keys

    async def _summarise(
        self,
        clients: Clients,
        produced: list[tuple[dict[str, Any], str, bool]],
        valid: list[dict[str, Any]],
        expected_alerts: set[str],
        rules: list[str],
        alerts: list[dict[str, Any]],
        lines: dict[str, list[Any]],
        objects: list[str],
        codes: list[int],
    ) -> int:
        stored = await count(clients, self.settings.table)
        reasons = collections.Counter(line["reason"] for line in lines["deadletters"])
        alerted = [m["MessageAttributes"]["key"]["Value"] for m in alerts]
        archived = collections.Counter(
            (r["shard"], r["sequenceNumber"], r["subSequenceNumber"]) for r in lines["records"]
        )
        say(f"telemax demo --feed {self.feed.name} summary")
        say(f"  produced                          {len(produced):>8,}")
        say(f"  stored in {self.settings.table:<22} {stored:>8,}   (valid: {len(valid):,})")
        say(f"  dead-lettered                     {sum(reasons.values()):>8,}   {dict(reasons)}")
        if rules:
            once = sorted(alerted) == sorted(expected_alerts)
            say(
                f"  alerts {', '.join(rules)} received  {len(alerted):>8,}   "
                f"(expected {len(expected_alerts):,}, each once: {once})"
            )
            if alerts:
                sample = alerts[0]
                say(
                    f"    e.g. subject {sample.get('Subject')!r}, attributes "
                    f"{ {k: v['Value'] for k, v in sample['MessageAttributes'].items()} }"
                )
        say(
            f"  archived records (s3://{BUCKET})  {sum(archived.values()):>8,}   "
            f"in {len(objects)} objects, each record once: {max(archived.values(), default=1) == 1}"
        )
        # a few of each part: a lapsed lease (a slow backend) cuts more segments, and sorted
        # names alone would show dead letters only
        shown = [
            key
            for part in ("/records/", "/deadletters/")
            for key in sorted(k for k in objects if part in k)[:2]
        ]
        for key in shown:
            say(f"    {key}")
        if len(objects) > len(shown):
            say(f"    … and {len(objects) - len(shown)} more")
        counted = await self._insights(clients)
        say(f"  workers' exit codes               {codes}")
        ok = (
            counted == len(valid)
            and stored == len(valid)
            and sum(reasons.values()) == len(produced) - len(valid)
            and sorted(alerted) == sorted(expected_alerts)
            and sum(archived.values()) == len(valid)
            and max(archived.values(), default=1) == 1
            and not any(codes)
        )
        say("  result: OK" if ok else f"  result: FAILED (logs: {self.log_dir})")
        if sys.stdout.isatty():
            sys.stdout.flush()
        return 0 if ok else 1
