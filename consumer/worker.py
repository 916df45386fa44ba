"""The worker: the supervisor that owns every task (one root task group).

Start-up checks that the stream and tables exist and the handler loads, so that bad
configuration stops here with one clear line. Shutdown (SIGTERM/SIGINT, or :meth:`stop`):
stop taking leases, let each shard finish the batch in hand, checkpoint and release, then say
so in a last beat (the leader reassigns at once; a leader resigns after one last round), all
within ``shutdown_grace_s``, a deadline owned here; beats go on meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from consumer.adapters.fastpath import FastPath
from consumer.clients import records_writes
from consumer.config import Settings
from consumer.fanout import FanOutError
from consumer.feeds import telemax
from consumer.lease.coordinator import LeaseCoordinator
from consumer.lease.member_table import MemberRepository
from consumer.lease.members import MemberStore
from consumer.lease.model import LeaseStore, is_multi_stream_key
from consumer.lease.repository import LeaseRepository
from consumer.metrics import Metrics
from consumer.pipeline.alerting import alerting_for, check_alerting
from consumer.pipeline.committers import segmented_for
from consumer.pipeline.keys import table_key_names
from consumer.pipeline.stage import WriteStage
from consumer.pipeline.store import Store
from consumer.pipeline.table import BatchWriter
from consumer.shard.budget import RecordBudget
from consumer.shard.discovery import Lineage
from consumer.shard.processing import ShardContext
from consumer.shard.reader import Reader, ShardReader
from consumer.shard.supervisor import ShardSupervisor
from kernel import probes
from kernel.aws import (
    Check,
    Clients,
    check_usable,
    config_error_from,
    describe,
    error_code,
    patiently,
)
from kernel.errors import ConfigError
from kernel.handlers import Handler, load_handler
from kernel.logs import get as get_logger
from kernel.signals import stopping_on_signals

if TYPE_CHECKING:
    from consumer.fanout.reader import Subscriber

RELEASE_RESERVE_S = 2.0  # of the grace period, kept for the final release sweep


@dataclasses.dataclass(frozen=True)
class Checked:
    """What start-up established: the record handler and the key of the table it writes."""

    handler: Handler
    key_names: tuple[str, ...]


async def preflight(clients: Clients, settings: Settings) -> Checked:
    """Fail fast, with one line, on what would otherwise fail later and less clearly."""
    db = clients.dynamodb
    handler = load_handler(settings.handler)
    checks: list[Check] = [
        (
            f"Kinesis stream {settings.stream!r}",
            lambda: clients.kinesis.describe_stream_summary(StreamName=settings.stream),
        ),
        (
            f"DynamoDB lease table {settings.lease_table!r}",
            lambda: db.describe_table(TableName=settings.lease_table),
        ),
        (
            f"DynamoDB membership table {settings.member_table_name!r}",
            lambda: db.describe_table(TableName=settings.member_table_name),
        ),
        (
            f"DynamoDB dead-letter table {settings.dlq_table!r}",
            lambda: db.describe_table(TableName=settings.dlq_table),
        ),
    ]
    await check_usable(checks)
    # The records table: it exists, and its key is the one the handler's items carry.
    key_names = await table_key_names(db, settings.table, handler, settings.handler)
    await refuse_multi_stream_table(LeaseRepository(db, settings.lease_table))
    await check_alerting(clients, settings)
    # the archive's and the insights' modules only when on: a plain worker starts sooner
    if settings.archive_bucket:
        from consumer.pipeline.archiver import check_archive

        await check_archive(clients, settings)
    if settings.insights:
        from consumer.insights.store import check_insights

        await check_insights(clients, settings)
    return Checked(handler, key_names)


async def refuse_multi_stream_table(repository: LeaseRepository) -> None:
    """A KCL multi-stream application's table (keys ``account:stream:epoch:shardId``) would
    get a second, telemax lease for every shard: refuse it before any is created."""
    try:
        keys = await patiently(repository.sample_keys)
    except Exception as exc:
        raise config_error_from(exc, f"DynamoDB lease table {repository.table!r}") or exc from None
    multi = [key for key in keys if is_multi_stream_key(key)]
    if multi:
        raise ConfigError(
            f"lease table {repository.table!r} holds multi-stream KCL leases (e.g. {multi[0]!r}): "
            "telemax reads one stream per lease table; set TELEMAX_LEASE_TABLE to a table of "
            "its own"
        )


class Worker:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        handler: Handler,
        *,
        metrics: Metrics | None = None,
        fast: FastPath | None = None,
        subscriber: Subscriber | None = None,
        clock: Callable[[], float] = time.monotonic,
        repository: LeaseStore | None = None,
        members: MemberStore | None = None,
        writer: BatchWriter | None = None,
        key_names: Sequence[str] = telemax.KEY_NAMES,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics(settings.stream)
        self._clients = clients
        self._clock = clock
        self._started_at = clock()
        self._first_written = False
        self._stop = asyncio.Event()
        self._stop_leading = asyncio.Event()
        self._fatal: str | None = None  # why the worker stopped of itself (one line)
        self._log = get_logger(worker_id=settings.worker_id)
        self.health = probes.Health(ready=self.ready, clock=clock)
        # The lease and membership tables' item calls take the lean path too, when it is on.
        lease_db: Any = fast.items(clients.dynamodb) if fast else clients.dynamodb
        self.repository: LeaseStore = repository or LeaseRepository(
            lease_db, settings.lease_table, metrics=self.metrics
        )
        self.members: MemberStore = members or MemberRepository(
            lease_db, settings.member_table_name, metrics=self.metrics
        )
        self.lineage = Lineage(
            self.repository,
            clients.kinesis,
            settings.stream,
            settings.initial_position,
            self.metrics,
            settings.worker_id,
        )

        write_slots = asyncio.Semaphore(settings.write_concurrency)
        self.budget = RecordBudget(settings.max_in_flight_records)
        self.metrics.records_in_flight.set_function(lambda: self.budget.in_use)
        preparer = None
        if writer is None:
            writer, preparer = records_writes(fast, clients.dynamodb)
        self._subscriber = subscriber  # fan-out: shards read through SubscribeToShard
        self._get_records = fast.kinesis.get_records if fast else None
        self._get_iterator = fast.kinesis.get_shard_iterator if fast else None
        context = ShardContext(
            stream=settings.stream,
            worker_id=settings.worker_id,
            handler=handler,
            stage=WriteStage(
                Store.over(
                    writer,
                    table=settings.table,
                    key_names=key_names,
                    dlq_table=settings.dlq_table,
                    write_slots=write_slots,
                    metrics=self.metrics,
                    preparer=preparer,
                ),
                alerting_for(settings, clients, self.metrics, key_names, clock=clock),
            ),
            metrics=self.metrics,
            checkpoint_interval_s=settings.checkpoint_interval_s,
            parents_done=self.lineage.parents_done,
            make_reader=self._make_reader,
            budget=self.budget,
            create_children=self.lineage.create_children,
            stream_exists=self._stream_exists,
            hash_range_of=self._hash_range_of,
            on_written=self._note_written,
            on_config_error=self._on_config_error,
            clock=clock,
            segments=segmented_for(
                settings,
                clients,
                self.metrics,
                fast.data_items(clients.dynamodb) if fast else None,
            ),
        )
        # The supervisor keeps one consumer per lease the coordinator holds (DESIGN §3.9): it
        # reads the holds, and the coordinator tells it of every change.
        self.supervisor = ShardSupervisor(
            context,
            leases=lambda: self.coordinator.consumable(),
            release=self._release,
            on_shard_end=self._on_shard_end,
        )
        self.coordinator = LeaseCoordinator(
            self.repository,
            self.members,
            settings,
            self.metrics,
            on_change=self.supervisor.reconcile,
            hand_back=self.supervisor.hand_back,
            clock=clock,
            sync_shards=self.lineage.sync,
        )

    def ready(self) -> bool:
        return self.coordinator.beats > 0 and self.coordinator.aws_ok and not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Until SIGTERM (or :meth:`stop`); raises :class:`ConfigError` when the worker
        stopped of itself for a configuration error met while consuming."""
        with stopping_on_signals(self._stop, self._log):
            await self._run()
        if self._fatal is not None:
            raise ConfigError(self._fatal)

    def _on_config_error(self, error: ConfigError) -> bool:
        """A configuration error met while consuming. Fan-out refused under
        ``TELEMAX_RETRIEVAL=auto`` (SubscribeToShard denied though the consumer registered):
        every reader made from now on polls, and the shard starts again at once (True).
        Anything else stops the worker with its one line (False)."""
        if self.settings.retrieval == "auto" and isinstance(error, FanOutError):
            if self._subscriber is not None:  # the first shard to meet it: said once
                self._subscriber = None
                self._log.warning("fanout_refused_reading_by_polling", error=str(error))
            return True
        if self._fatal is None:
            self._fatal = str(error)
            self._log.error("worker_stopping_on_config_error", error=str(error))
        self.stop()
        return False

    async def _run(self) -> None:
        s = self.settings
        async with AsyncExitStack() as stack:
            port = await probes.listen(
                stack, self.metrics.registry, self.health, s.metrics_host, s.metrics_port
            )
            self._log.info(
                "worker_started",
                stream=s.stream,
                table=s.table,
                metrics_port=port,
                lease_duration_s=s.lease_duration_s,
                fast_path=self._get_records is not None,
                retrieval=s.retrieval,
                feed=s.feed,
                alerts=bool(s.alert_topic_arn),
                archive=s.archive_bucket or None,
                insights=s.insights_table if s.insights else None,
            )
            async with asyncio.TaskGroup() as group:
                group.create_task(self.supervisor.run())  # ends after close()
                background = [group.create_task(self.health.beat_forever())]
                await self.supervisor.ready.wait()
                leading = group.create_task(self.coordinator.leader.run(self._stop_leading))
                background += [
                    group.create_task(self.coordinator.run_beats()),
                    group.create_task(self.coordinator.run_fencing()),
                ]
                await self._stop.wait()
                await self._shutdown(leading)
                self.supervisor.close()
                for task in [leading, *background]:  # a deadline cut short: leading too
                    task.cancel()
        self._log.info("worker_stopped", uptime_s=round(self._clock() - self._started_at, 3))

    async def _shutdown(self, leading: asyncio.Task[None]) -> None:
        """Stop taking; let each consumer finish its batch, checkpoint, then release; release
        what is left; leave (and resign). All of it under one deadline, ``shutdown_grace_s``,
        owned here: what the deadline cuts short is not written, and its leases are
        reassigned once our beats stop."""
        loop = asyncio.get_running_loop()
        grace = self.settings.shutdown_grace_s
        started = loop.time()
        deadline = started + grace
        self._log.info("worker_stopping", held=sorted(self.coordinator.held), grace_s=grace)
        self.coordinator.taking = False
        try:
            async with asyncio.timeout_at(deadline):
                drain = max(0.1, deadline - RELEASE_RESERVE_S - loop.time())
                await self.supervisor.stop_all(timeout=drain)
                leftover = list(self.coordinator.held)
                await asyncio.gather(*(self._release(key, "shutdown") for key in leftover))
                self._stop_leading.set()
                self.coordinator.leader.wake.set()
                await leading  # a round under way ends first
                await self.coordinator.leave()
        except TimeoutError:
            self._log.warning("shutdown_deadline_passed", held=sorted(self.coordinator.held))
        self._log.info("worker_drained", seconds=round(loop.time() - started, 3))

    async def _release(self, shard_id: str, why: str) -> None:
        await self.coordinator.release(shard_id, why)

    def _make_reader(self, shard_id: str, checkpoint: str) -> Reader:
        if self._subscriber is not None:
            return self._fanout_reader(shard_id, checkpoint)
        s = self.settings
        return ShardReader(
            self._clients.kinesis,
            s.stream,
            shard_id,
            checkpoint,
            metrics=self.metrics,
            at_timestamp=s.initial_timestamp,
            limit=s.max_records,
            idle_poll_s=s.idle_poll_s,
            get_records=self._get_records,
            get_iterator=self._get_iterator,
            budget=self.budget,
            clock=self._clock,
            on_error=lambda exc: self._log.warning(
                "get_records_retry", shard_id=shard_id, error=describe(exc)
            ),
        )

    def _note_written(self, count: int) -> None:
        if count and not self._first_written:
            self._first_written = True
            self._log.info(
                "first_records_written",
                count=count,
                seconds_since_start=round(self._clock() - self._started_at, 3),
            )

    def _on_shard_end(self, shard_id: str) -> None:
        """A shard ended: the leader reads the lease table and lists the shards soon (for
        children Kinesis did not name: a shard gone past retention, emulators)."""
        self.coordinator.note_shard_end()

    def _hash_range_of(self, shard_id: str) -> tuple[int, int] | None:
        held = self.coordinator.held.get(shard_id)
        return held.lease.hash_range if held is not None else None

    async def _stream_exists(self) -> bool:
        try:
            await self._clients.kinesis.describe_stream_summary(StreamName=self.settings.stream)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise
        return True

    def _fanout_reader(self, shard_id: str, checkpoint: str) -> Reader:
        from consumer.fanout.reader import FanOutReader  # h2: only when fan-out is on

        s = self.settings
        assert self._subscriber is not None
        return FanOutReader(
            self._subscriber,
            s.stream,
            shard_id,
            checkpoint,
            metrics=self.metrics,
            at_timestamp=s.initial_timestamp,
            budget=self.budget,
            clock=self._clock,
            on_error=lambda detail: self._log.warning(
                "subscription_reopened", shard_id=shard_id, detail=detail
            ),
        )
