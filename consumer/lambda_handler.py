"""AWS Lambda entry point: the worker's pipeline on a Kinesis event (or an SQS one).

``handler(event, context)`` runs what a worker runs on one ``GetRecords`` batch — decode,
validate (the configured record handler), ``BatchWriteItem`` through :class:`BatchSink`,
dead letters for records that can never be written — and answers in the
``ReportBatchItemFailures`` format. A record is *done* when each item it gave is durable —
stored, or merged away under a later item with the same key that was stored — and each of its
items DynamoDB refused, and each of its dead letters, is durably in the dead-letter table.
Done-ness is decided item by item, never by key: two records of one key are two items, and one
being stored or dead-lettered says nothing about the other. If a record is not done, the answer
names the lowest sequence number that is not, and Lambda retries the shard from there:
everything before it is done, everything after it is written again, which costs a write and
never a wrong row (DESIGN §3.7).

The records table's key comes from the table itself (one ``DescribeTable`` on a cold start,
checked against the key the record handler declares; see :mod:`consumer.pipeline.keys`).

Configuration is the worker's: ``TELEMAX_TABLE``, ``TELEMAX_DLQ_TABLE``, ``TELEMAX_HANDLER``,
``TELEMAX_WRITE_CONCURRENCY``, ``TELEMAX_LOG_LEVEL`` and the standard AWS variables. The stream
name comes from each record's ``eventSourceARN``, the shard id from its ``eventID``
(``shardId-…:<sequence number>``).

One event loop and the run's clients live as long as the execution environment, so warm
invocations reuse connections: the worker's choice of clients (:mod:`consumer.clients`: lean
ones when the whole AWS configuration is in the environment, as Lambda's is, and the run
needs no more than they offer) and its lean path for the records' ``BatchWriteItem`` unless
``TELEMAX_FAST_PATH`` is false (``make bench-lambda``: 12.6 µs of CPU a record warm against
aiobotocore's 104.5, a cold start's first invocation 0.013 CPU-s against 0.35). Writes stop
early enough before the function's deadline to answer with the records that are not done
instead of timing out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from structlog.typing import FilteringBoundLogger

from consumer import config
from consumer.clients import fast_path_for, records_writes, run_clients
from consumer.config import Settings, feed_of
from consumer.insights.batch import batch_insights_for
from consumer.insights.kept import batch_facts
from consumer.insights.store import check_insights
from consumer.metrics import Metrics
from consumer.pipeline.alerting import alerting_for, check_alerting
from consumer.pipeline.archiver import check_archive
from consumer.pipeline.batch_archive import batch_archive_for
from consumer.pipeline.convert import Converter, Record, dead_letter
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.entries import ARRIVAL, entries_of
from consumer.pipeline.keys import table_key_names
from consumer.pipeline.pieces import one_each
from consumer.pipeline.stage import Progress, WriteStage
from consumer.pipeline.store import DEAD_LETTER_CONCURRENCY, Store
from consumer.sources.archive import MessageArchive, archive_done, message_archive_for
from consumer.sources.messages import failed_in_lambda, lambda_record_of
from kernel import logs
from kernel.aws import Clients, describe
from kernel.errors import ConfigError
from kernel.handlers import Handler, load_handler
from kernel.logs import get as get_logger

if TYPE_CHECKING:
    from consumer.adapters.fastpath import FastPath

# Of the time left when an invocation starts, keep this share (within these bounds) to answer.
RESERVE_SHARE = 0.1
RESERVE_MIN_S = 1.0
RESERVE_MAX_S = 5.0

Key = tuple[Any, ...]
Response = dict[str, list[dict[str, str]]]


def shard_of(raw: Mapping[str, Any]) -> str:
    """``eventID`` is ``<shard id>:<sequence number>``."""
    shard, sep, _ = str(raw.get("eventID", "")).partition(":")
    return shard if sep and shard else "unknown"


def stream_of(raw: Mapping[str, Any], default: str) -> str:
    """``arn:aws:kinesis:<region>:<account>:stream/<name>`` -> ``<name>``."""
    _, sep, rest = str(raw.get("eventSourceARN", "")).partition(":stream/")
    name = rest.split("/", 1)[0]
    return name if sep and name else default


def budget_s(context: object) -> float | None:
    """Seconds this invocation may spend writing; None without a Lambda context (local runs)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    left = max(0.0, float(remaining()) / 1000)
    reserve = min(RESERVE_MAX_S, max(RESERVE_MIN_S, left * RESERVE_SHARE))
    return max(0.0, left - reserve)


@dataclasses.dataclass
class Batch:
    """One shard's records of an event in stream order, and dead letters for undecodable ones."""

    stream: str
    shard_id: str
    records: list[Record] = dataclasses.field(default_factory=list)
    undecodable: list[DeadLetter] = dataclasses.field(default_factory=list)


def batches(event: Mapping[str, Any], default_stream: str) -> list[Batch]:
    """Group the event's records by (stream, shard); Kinesis data arrives base64-encoded."""
    by_shard: dict[tuple[str, str], Batch] = {}
    for raw in event.get("Records", []):
        stream, shard_id = stream_of(raw, default_stream), shard_of(raw)
        batch = by_shard.setdefault((stream, shard_id), Batch(stream, shard_id))
        kinesis = raw["kinesis"]
        record: Record = {
            "SequenceNumber": str(kinesis["sequenceNumber"]),
            "PartitionKey": str(kinesis.get("partitionKey", "")),
            ARRIVAL: kinesis.get("approximateArrivalTimestamp"),
        }
        encoded = str(kinesis.get("data", ""))
        try:
            record["Data"] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            record["Data"] = encoded.encode()
            batch.undecodable.append(
                dead_letter(stream, shard_id, record, "invalid_base64", str(exc))
            )
        batch.records.append(record)
    return list(by_shard.values())


def lowest(sequence_numbers: Iterable[str]) -> str | None:
    return min(sequence_numbers, key=int, default=None)


class Runtime:
    """What one Lambda execution environment keeps between invocations."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or config.load("run")
        logs.configure(self.settings.log_level)
        self._log = get_logger()
        self.handler: Handler = load_handler(self.settings.handler)
        self.metrics = Metrics(self.settings.stream)
        self._loop = asyncio.new_event_loop()
        self._stack = AsyncExitStack()
        pool = self.settings.write_concurrency + DEAD_LETTER_CONCURRENCY
        self._fast: FastPath | None = None
        self._clients: Clients = self._loop.run_until_complete(
            self._stack.enter_async_context(run_clients(self.settings, pool))
        )
        self._write_slots = asyncio.Semaphore(self.settings.write_concurrency)
        try:
            # The records' writes on the lean path, as the worker's (unless TELEMAX_FAST_PATH
            # is false): a tenth of aiobotocore's CPU a record (the module's docstring).
            self._fast = self._loop.run_until_complete(
                fast_path_for(self._clients, self.settings, pool)
            )
            # once per execution environment: the table's key, checked against the handler's
            self.key_names: tuple[str, ...] = self._loop.run_until_complete(
                table_key_names(
                    self._clients.dynamodb, self.settings.table, self.handler, self.settings.handler
                )
            )
            self._loop.run_until_complete(check_alerting(self._clients, self.settings))
            self._loop.run_until_complete(check_archive(self._clients, self.settings))
            self._loop.run_until_complete(check_insights(self._clients, self.settings))
        except BaseException as exc:
            if isinstance(exc, ConfigError):
                self._log.error("configuration_error", error=str(exc))
            self.close()
            raise
        writer, preparer = records_writes(self._fast, self._clients.dynamodb)
        self._stage = WriteStage(
            Store.over(
                writer,
                preparer=preparer,
                table=self.settings.table,
                key_names=self.key_names,
                dlq_table=self.settings.dlq_table,
                write_slots=self._write_slots,
                metrics=self.metrics,
            ),
            # a publish under way ends inside the reserve kept before the function's deadline
            alerting_for(
                self.settings,
                self._clients,
                self.metrics,
                self.key_names,
                finish_grace_s=RESERVE_MIN_S / 2,
            ),
        )
        self._archive = batch_archive_for(self.settings, self._clients, self.metrics)
        self._insights = batch_insights_for(self.settings, self._clients.dynamodb, self.metrics)
        self._facts = (
            functools.partial(batch_facts, self._insights.wire.spec)
            if self._insights is not None
            else None
        )
        self._message_archives: dict[str, MessageArchive] = {}
        self._log.info("lambda_ready", fast_path=self._fast is not None)

    def close(self) -> None:
        try:
            if self._fast is not None:
                self._fast.close()
            self._loop.run_until_complete(self._stack.aclose())
        finally:
            self._loop.close()

    def handle(self, event: Mapping[str, Any], context: object = None) -> Response:
        return self._loop.run_until_complete(self._handle(event, budget_s(context)))

    async def _handle(self, event: Mapping[str, Any], budget: float | None) -> Response:
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        raw = event.get("Records", [])
        if raw and raw[0].get("eventSource") == "aws:sqs":
            return await self._handle_sqs(raw, deadline)
        work = batches(event, self.settings.stream)
        failed = await asyncio.gather(*(self._process(batch, deadline) for batch in work))
        return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed if seq]}

    async def _handle_sqs(
        self, raw: Sequence[Mapping[str, Any]], deadline: float | None
    ) -> Response:
        """An SQS event: the same stages; the partial batch response names every message
        not done (on a FIFO queue, the first and every one after it, as Lambda requires)."""
        started = time.perf_counter()
        queue = str(raw[0].get("eventSourceARN", "")).rsplit(":", 1)[-1] or "sqs"
        shard = f"sqs:{queue}"
        log = self._log.bind(queue=queue)
        records = [lambda_record_of(message) for message in raw]
        self.metrics.records_received.labels(queue).inc(len(records))
        converter = Converter(self.handler, queue, shard, self.key_names)
        errors = self.metrics.handler_errors.labels(queue)
        converted = await converter.retrying(records, log, errors)
        progress = Progress(converted, list(converted.dead))
        await self._stage.write(progress, queue, shard, log, deadline=deadline)
        ids = [record["SequenceNumber"] for record in records]
        undone = progress.undone()
        if self._archive is not None:
            undone = await self._messages_archived(queue, progress, records, undone, deadline, log)
        failed = failed_in_lambda(ids, undone, queue.endswith(".fifo"))
        log.info(
            "lambda_sqs_batch_processed",
            messages=len(records),
            failed=len(failed),
            seconds=round(time.perf_counter() - started, 3),
        )
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}

    async def _process(self, batch: Batch, deadline: float | None) -> str | None:
        """Write one shard's records; the lowest sequence number not done, or None."""
        started = time.perf_counter()
        log = self._log.bind(shard_id=batch.shard_id, stream=batch.stream)
        self.metrics.records_received.labels(batch.stream).inc(len(batch.records))
        bad = {letter.sequence_number for letter in batch.undecodable}
        decodable = [r for r in batch.records if r["SequenceNumber"] not in bad]
        # De-aggregates KPL records: one Kinesis record may give several items (user records).
        # A handler that raises gets the batch again, as in the worker, before dead letters.
        converter = Converter(self.handler, batch.stream, batch.shard_id, self.key_names)
        errors = self.metrics.handler_errors.labels(batch.stream)
        converted = await converter.retrying(decodable, log, errors)
        progress = Progress(converted, batch.undecodable + converted.dead)
        await self._stage.write(progress, batch.stream, batch.shard_id, log, deadline=deadline)
        retry_from = lowest(progress.undone())
        if self._archive is not None or self._insights is not None:
            retry_from = await self._segments(batch, progress, retry_from, deadline, log)
        log.info(
            "lambda_batch_processed",
            records=len(batch.records),
            items=len(converted.entries),
            dead_letters=len(progress.letters),
            retry_from=retry_from,
            seconds=round(time.perf_counter() - started, 3),
        )
        return retry_from

    async def _messages_archived(
        self,
        queue: str,
        progress: Progress,
        records: Sequence[Record],
        undone: set[str],
        deadline: float | None,
        log: FilteringBoundLogger,
    ) -> set[str]:
        """Archive the messages that are done (see :mod:`consumer.sources.archive`); answer
        every message that is not done."""
        if queue not in self._message_archives:
            archive = message_archive_for(self.settings, self._clients, self.metrics, queue)
            assert archive is not None
            self._message_archives[queue] = archive
        try:
            async with asyncio.timeout_at(deadline):
                busy = await archive_done(
                    self._message_archives[queue], progress, records, undone, queue
                )
        except (Exception, TimeoutError) as exc:  # claims are idempotent: all again
            log.error("archive_failed", error=describe(exc))
            return {r["SequenceNumber"] for r in records}
        return undone | busy

    async def _segments(
        self,
        batch: Batch,
        progress: Progress,
        retry_from: str | None,
        deadline: float | None,
        log: FilteringBoundLogger,
    ) -> str | None:
        """Archive what is done (the records before ``retry_from``), then count it in the
        insights; where to retry from."""
        target = self._archive.target if self._archive is not None else None
        entries = one_each(  # a batch's records one by one (a batch is small)
            entries_of(
                progress,
                batch.records,
                feed_of(self.settings).name,
                batch.stream,
                batch.shard_id,
                target is not None and target.raw_json,
                lines=self._archive is not None,
                facts=self._facts,
            )
        )
        if retry_from is not None:
            end = int(retry_from)
            entries = [e for e in entries if int(e.position[0]) < end]
        try:
            async with asyncio.timeout_at(deadline):
                if self._archive is not None:
                    await self._archive.write(batch.shard_id, entries)
                if self._insights is not None:
                    await self._insights.write(batch.shard_id, entries)
        except ConfigError:
            raise  # the function fails: its Errors alarm, not a quiet loop
        except (Exception, TimeoutError) as exc:  # both are idempotent: all again
            log.error("segments_failed", error=describe(exc))
            return lowest(r["SequenceNumber"] for r in batch.records)
        return retry_from


_runtime: Runtime | None = None


def handler(event: Mapping[str, Any], context: object) -> Response:
    """The function's handler (``consumer.lambda_handler.handler``)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime.handle(event, context)


def reset() -> None:
    """Close the clients and forget the runtime (tests; a new configuration)."""
    global _runtime
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        runtime.close()
