"""The SQS source (``TELEMAX_SOURCE=sqs``): long-poll receives through the same convert and
write stages as Kinesis, and a message deleted only once everything it produced is durable.

No leases: SQS hands each message to one receiver at a time, so any number of replicas (and
``TELEMAX_SQS_RECEIVERS`` receive loops in each) share a queue. While a batch is in flight its
visibility is extended every third of ``TELEMAX_SQS_VISIBILITY_S``, so a slow DynamoDB never
lets a peer receive the same messages meanwhile; a message that is not done is left to come
back when its visibility lapses. Bad records are dead-lettered (and the message deleted) as
from Kinesis; a message received ``TELEMAX_SQS_MAX_RECEIVES`` times without being done is
dead-lettered as ``redelivered_too_often`` rather than looping. On a FIFO queue order holds per
message group (:func:`consumer.sources.messages.deletable`).

Shutdown (SIGTERM): stop receiving, finish the batches in hand within
``TELEMAX_SHUTDOWN_GRACE_S`` (a deadline owned here), exit; what the deadline cuts short comes
back to a peer when its visibility lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.pipeline.alerting import alerting_for
from consumer.pipeline.convert import Converter, dead_letter
from consumer.pipeline.stage import Progress, WriteStage
from consumer.pipeline.store import Store
from consumer.pipeline.table import BatchPreparer, BatchWriter, botocore_batch_writer
from consumer.sources.archive import archive_done, message_archive_for
from consumer.sources.messages import (
    POISON,
    deletable,
    is_poison,
    queue_name,
    receives,
    record_of,
    shard_of,
)
from kernel import probes
from kernel.aws import SQS_LONG_POLL_S, Clients, describe
from kernel.backoff import Backoff, sleep_or_stop
from kernel.handlers import Handler
from kernel.logs import get as get_logger
from kernel.signals import stopping_on_signals

MAX_MESSAGES = 10  # ReceiveMessage and DeleteMessageBatch take at most ten


class SqsWorker:
    def __init__(
        self,
        settings: Settings,
        clients: Clients,
        handler: Handler,
        key_names: Sequence[str],
        *,
        metrics: Metrics | None = None,
        writer: BatchWriter | None = None,
        preparer: BatchPreparer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.queue_url = settings.queue_url
        self.queue = queue_name(self.queue_url)
        self.fifo = self.queue.endswith(".fifo")
        self.metrics = metrics or Metrics(self.queue)
        self._sqs = clients.sqs
        self._clock = clock
        self._started_at = clock()
        self._stop = asyncio.Event()
        self._received_once = False
        self._aws_ok = True
        self._log = get_logger(worker_id=settings.worker_id, queue=self.queue)
        self.health = probes.Health(ready=self.ready, clock=clock)
        shard = shard_of(self.queue_url)
        self._shard = shard
        self._converter = Converter(handler, self.queue, shard, tuple(key_names))
        self.stage = WriteStage(
            Store.over(
                writer or botocore_batch_writer(clients.dynamodb),
                preparer=preparer,
                table=settings.table,
                key_names=key_names,
                dlq_table=settings.dlq_table,
                write_slots=asyncio.Semaphore(settings.write_concurrency),
                metrics=self.metrics,
            ),
            alerting_for(settings, clients, self.metrics, key_names, clock=clock),
        )
        self._lean_writes = preparer is not None  # (only the lean path prepares requests)
        self._archive = message_archive_for(settings, clients, self.metrics, self.queue)
        self._messages = self.metrics.sqs_messages
        self._extended = self.metrics.sqs_visibility_extended.labels(self.queue)

    def ready(self) -> bool:
        return self._received_once and self._aws_ok and not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        with stopping_on_signals(self._stop, self._log):
            await self._run()

    async def _run(self) -> None:
        s = self.settings
        async with AsyncExitStack() as stack:
            port = await probes.listen(
                stack, self.metrics.registry, self.health, s.metrics_host, s.metrics_port
            )
            self._log.info(
                "worker_started",
                source="sqs",
                table=s.table,
                metrics_port=port,
                fifo=self.fifo,
                fast_path=self._lean_writes,
            )
            async with asyncio.TaskGroup() as group:
                beating = group.create_task(self.health.beat_forever())
                receivers = [
                    group.create_task(self._receive_forever(n)) for n in range(s.sqs_receivers)
                ]
                await self._stop.wait()
                started = self._clock()
                self._log.info("worker_stopping", grace_s=s.shutdown_grace_s)
                _, pending = await asyncio.wait(receivers, timeout=s.shutdown_grace_s)
                for task in pending:  # a deadline cut short: back to a peer in a while
                    task.cancel()
                if pending:
                    self._log.warning("shutdown_deadline_passed", receivers=len(pending))
                beating.cancel()
                self._log.info("worker_drained", seconds=round(self._clock() - started, 3))
        self._log.info("worker_stopped", uptime_s=round(self._clock() - self._started_at, 3))

    async def _receive_forever(self, receiver: int) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        while not self._stop.is_set():
            try:
                messages = await self._receive()
            except Exception as exc:
                self._aws_ok = False
                self._log.warning("receive_failed", receiver=receiver, error=describe(exc))
                await sleep_or_stop(backoff.next_delay(), self._stop)
                continue
            self._aws_ok = True
            self._received_once = True
            backoff.reset()
            if messages:
                try:
                    await self.handle(messages)
                except Exception as exc:  # not done: the messages come back on their own
                    self._log.error("batch_failed", messages=len(messages), error=describe(exc))
                    await sleep_or_stop(backoff.next_delay(), self._stop)

    async def _receive(self) -> list[dict[str, Any]]:
        """One long poll, cut short by a stop (what it would have brought comes back)."""
        call = asyncio.ensure_future(
            self._sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=MAX_MESSAGES,
                WaitTimeSeconds=min(SQS_LONG_POLL_S, self.settings.sqs_wait_s),
                VisibilityTimeout=int(self.settings.sqs_visibility_s),
                MessageSystemAttributeNames=["All"],
            )
        )
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({call, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
            return []
        answer: Any = call.result()
        return list(answer.get("Messages", []))

    async def handle(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """Write what the messages hold; delete the ones that are done."""
        queue = self.queue
        self.metrics.records_received.labels(queue).inc(len(messages))
        limit = self.settings.sqs_max_receives
        poison = [m for m in messages if is_poison(m, limit)]
        healthy = [m for m in messages if not is_poison(m, limit)]
        async with self._kept_invisible(messages):
            records = [record_of(m) for m in healthy]
            errors = self.metrics.handler_errors.labels(queue)
            converted = await self._converter.retrying(records, self._log, errors)
            letters = list(converted.dead)
            for message in poison:
                detail = f"received {receives(message)} times without being stored"
                letters.append(dead_letter(queue, self._shard, record_of(message), POISON, detail))
            progress = Progress(converted, letters)
            await self.stage.write(progress, queue, self._shard, self._log)
            undone = progress.undone()
            if self._archive is not None:
                everything = records + [record_of(m) for m in poison]
                undone |= await archive_done(self._archive, progress, everything, undone, queue)
            done = deletable(messages, undone, self.fifo)
            await self._delete(done)
        self._messages.labels(queue, "deleted").inc(len(done))
        if poison:
            self._messages.labels(queue, "poison").inc(len(poison))
        left = len(messages) - len(done)
        if left:
            self._messages.labels(queue, "left").inc(left)
            self._log.warning("messages_left_for_redelivery", count=left)

    async def _delete(self, messages: Sequence[Mapping[str, Any]]) -> None:
        """DeleteMessageBatch, retrying the entries that failed; a receipt that is no longer
        valid (the visibility lapsed) is given up: the message comes back, done again."""
        pending = [
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
        ]
        backoff = Backoff(base=0.1, cap=2.0)
        for _ in range(5):
            if not pending:
                return
            answer = await self._sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=pending,  # type: ignore[arg-type]
            )
            failed = {f["Id"] for f in answer.get("Failed", []) if not f.get("SenderFault")}
            pending = [entry for entry in pending if entry["Id"] in failed]
            if pending:
                await backoff.sleep()
        if pending:
            self._log.warning("delete_failed", count=len(pending))

    @contextlib.asynccontextmanager
    async def _kept_invisible(self, messages: Sequence[Mapping[str, Any]]) -> AsyncIterator[None]:
        """Extend the messages' visibility every third of it until the block ends."""
        task = asyncio.create_task(self._extend_forever(messages))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _extend_forever(self, messages: Sequence[Mapping[str, Any]]) -> None:
        visibility = self.settings.sqs_visibility_s
        entries = [
            {
                "Id": str(n),
                "ReceiptHandle": m["ReceiptHandle"],
                "VisibilityTimeout": int(visibility),
            }
            for n, m in enumerate(messages)
        ]
        while True:
            await asyncio.sleep(visibility / 3)
            try:
                await self._sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=entries,  # type: ignore[arg-type]
                )
                self._extended.inc(len(entries))
            except Exception as exc:  # the next try comes; at worst a peer gets them too
                self._log.warning("visibility_extension_failed", error=describe(exc))


async def preflight_sqs(clients: Clients, settings: Settings) -> tuple[Handler, tuple[str, ...]]:
    """Fail fast, with one line: the queue, the tables and the handler (as the worker's)."""
    from consumer.pipeline.alerting import check_alerting
    from consumer.pipeline.archiver import check_archive
    from consumer.pipeline.keys import table_key_names
    from consumer.pipeline.ledger import ledger_check, needs_ledger
    from kernel.aws import Check, check_usable
    from kernel.handlers import load_handler

    handler = load_handler(settings.handler)
    checks: list[Check] = [
        (
            f"SQS queue {settings.queue_url!r}",
            lambda: clients.sqs.get_queue_attributes(
                QueueUrl=settings.queue_url, AttributeNames=["QueueArn"]
            ),
        ),
        (
            f"DynamoDB dead-letter table {settings.dlq_table!r}",
            lambda: clients.dynamodb.describe_table(TableName=settings.dlq_table),
        ),
    ]
    await check_usable(checks)
    key_names = await table_key_names(clients.dynamodb, settings.table, handler, settings.handler)
    await check_alerting(clients, settings)
    await check_archive(clients, settings)
    if needs_ledger(settings):  # the messages' archive claims live there
        await check_usable([ledger_check(clients, settings)])
    return handler, key_names
