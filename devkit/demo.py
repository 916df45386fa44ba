"""``demo``: the whole service end to end on an embedded moto server, no AWS, no Docker.

Starts moto in-process on 127.0.0.1, runs ``setup``, launches worker *processes*, produces
readings while showing progress, then proves the result: every produced (hardwareID,
Timestamp) is read back from TELEMAX. moto's Kinesis loses records under concurrent
PutRecords, so the demo's producer keeps one call in flight; the final check would catch a
loss anyway. Exit code 0 only when nothing is missing and the workers stopped cleanly.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from consumer.config import Settings
from consumer.lease.repository import LeaseRepository
from consumer.ops.provision import setup
from devkit.local import WorkerProcess, aws_env, moto_in_process
from kernel.aws import Clients, open_clients, scan_pages
from kernel.kpl.encode import Entry
from kernel.tasks import running
from producer.readings import readings
from producer.shipper import Shipper

PROGRESS_S = 0.25
STALL_LIMIT_S = 60.0


def say(line: str = "") -> None:
    print(line, flush=True)


class Demo:
    def __init__(self, count: int = 10_000, shards: int = 2, workers: int = 2) -> None:
        self.count = count
        self.settings = Settings(shards=shards, worker_id="demo")
        self.worker_count = workers
        self._shown_at = 0.0
        self.log_dir = Path(tempfile.mkdtemp(prefix="telemax-demo-"))

    async def run(self) -> int:
        with moto_in_process() as endpoint:
            env = aws_env(endpoint)
            os.environ.update(env)
            say(f"telemax demo: moto server at {endpoint} (in-process); logs in {self.log_dir}")
            async with open_clients() as clients:
                for line in (await setup(clients, self.settings)).lines():
                    say(f"  setup: {line}")
                return await self._run(clients, env)

    async def _run(self, clients: Clients, env: dict[str, str]) -> int:
        batch = list(readings(self.count, devices=min(500, self.count)))
        keys = {(r["hardwareID"], r["Timestamp"]) for r in batch}
        entries = [Entry(orjson.dumps(r), r["hardwareID"]) for r in batch]
        worker_env = {**env, "TELEMAX_LEASE_DURATION_S": "6", "TELEMAX_LOG_LEVEL": "info"}
        started = time.monotonic()
        workers = [
            WorkerProcess(f"demo-worker-{n + 1}", worker_env, self.log_dir)
            for n in range(self.worker_count)
        ]
        say(
            f"  started {len(workers)} workers, producing {self.count:,} readings "
            f"over {self.settings.shards} shards"
        )
        shipper = Shipper(clients.kinesis, self.settings.stream, concurrency=1)
        try:
            async with running(shipper.ship(entries)) as producing:
                first, last, dead = await self._follow(workers, shipper, producing, started)
        finally:
            codes = [await asyncio.to_thread(worker.stop) for worker in workers]
        if sys.stdout.isatty():
            sys.stdout.write("\n")
        return await self._summarise(
            clients, keys, shipper, workers, codes, started, first, last, dead
        )

    async def _everything_stored(self, produced: int) -> bool:
        async with open_clients() as clients:
            items = await count(clients, self.settings.table)
            letters = await count(clients, self.settings.dlq_table)
        return items + letters >= produced

    async def _follow(
        self,
        workers: list[WorkerProcess],
        shipper: Shipper,
        producing: asyncio.Future[Any],
        started: float,
    ) -> tuple[float | None, float | None, int]:
        first: float | None = None
        last: float | None = None
        stored = dead = 0
        progressed_at = time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_S)
            scraped = await asyncio.gather(*(asyncio.to_thread(w.metrics) for w in workers))
            now_stored = int(sum(m.get("telemax_records_written_total", 0) for m in scraped))
            dead = int(sum(m.get("telemax_records_dead_lettered_total", 0) for m in scraped))
            if now_stored > stored:
                progressed_at = last = time.monotonic()
                first = first or last
            stored = now_stored
            produced = shipper.tally.acknowledged
            held = [int(m.get("telemax_leases_held", 0)) for m in scraped]
            # "written" counts every write, including records written again after a shard
            # changed hands (at-least-once); the final check reads the table itself.
            line = (
                f"  produced {produced:>7,}  written {stored:>7,}  dead-lettered {dead:>3}  "
                f"lag {max(0, produced - stored - dead):>7,}  leases per worker {held}"
            )
            self._show(line)
            # The counters include records written again after a shard changed hands, so
            # they only say when to look: the tables themselves say when everything is in.
            if producing.done() and stored + dead >= produced:
                producing.result()
                if await self._everything_stored(produced):
                    return first, last, dead
            if any(w.proc.poll() is not None for w in workers):
                raise RuntimeError("a worker exited early; see " + str(self.log_dir))
            if time.monotonic() - progressed_at > STALL_LIMIT_S:
                say(f"\n  no progress for {STALL_LIMIT_S:.0f} s: giving up")
                return first, last, dead

    def _show(self, line: str) -> None:
        """Redraw one line on a terminal; print a line a second to a log or pipe."""
        if sys.stdout.isatty():
            sys.stdout.write("\r" + line + "   ")
            sys.stdout.flush()
        elif time.monotonic() - self._shown_at >= 1.0:
            self._shown_at = time.monotonic()
            say(line)

    async def _summarise(
        self,
        clients: Clients,
        keys: set[tuple[str, str]],
        shipper: Shipper,
        workers: list[WorkerProcess],
        codes: list[int],
        started: float,
        first: float | None,
        last: float | None,
        dead: int,
    ) -> int:
        found = await stored_keys(clients, self.settings.table)
        missing = keys - found
        leases = await LeaseRepository(clients.dynamodb, self.settings.lease_table).list()
        owned = [lease.key for lease in leases if lease.owner]
        say("telemax demo summary")
        say(f"  produced (acknowledged by Kinesis)  {shipper.tally.acknowledged:>8,}")
        say(f"  stored in {self.settings.table:<24} {len(found & keys):>8,}")
        say(f"  dead-lettered                       {dead:>8,}")
        say(f"  missing                             {len(missing):>8,}")
        if first is not None and last is not None:
            span = max(last - first, 1e-3)
            say(f"  first record stored after           {first - started:>8.2f} s")
            say(
                f"  throughput (first to last stored)   {len(found & keys) / span:>8,.0f} records/s"
            )
        say(f"  workers' exit codes                 {codes}")
        say(f"  leases still owned after shutdown   {owned or 'none'}")
        ok = not missing and shipper.tally.acknowledged == self.count and not any(codes)
        ok = ok and not owned
        say(
            "  result: OK, every record stored"
            if ok
            else f"  result: FAILED (logs: {self.log_dir})"
        )
        return 0 if ok else 1


async def count(clients: Clients, table: str) -> int:
    pages = scan_pages(clients.dynamodb.scan, TableName=table, Select="COUNT")
    return sum([int(page["Count"]) async for page in pages])


async def stored_keys(clients: Clients, table: str) -> set[tuple[str, str]]:
    pages = scan_pages(
        clients.dynamodb.scan,
        TableName=table,
        ProjectionExpression="hardwareID, #t",
        ExpressionAttributeNames={"#t": "Timestamp"},
    )
    return {
        (item["hardwareID"]["S"], item["Timestamp"]["S"])
        async for page in pages
        for item in page.get("Items", [])
    }
