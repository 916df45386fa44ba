"""``dlq list`` and ``dlq replay``: look at dead letters, and re-drive them after a fix.

Replay runs each stored record through the *current* handler and batch sink; a record that
now becomes an item is written to the table and its dead letter deleted, one that still fails
stays where it is. Running replay twice changes nothing the second time. The records
table's key comes from the table, checked against the handler's declaration before anything
is read or written (see :mod:`consumer.pipeline.keys`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from consumer.metrics import Metrics
from consumer.ops.render import text_table
from consumer.pipeline import deadletter
from consumer.pipeline.keys import spec_of, table_key_names
from consumer.pipeline.table import BatchSink, botocore_batch_writer
from kernel.aws import Clients, scan_pages
from kernel.errors import InvalidRecord
from kernel.handlers import Handler, Item

COLUMNS = ("shard", "sequence number", "sub", "reason", "seen at", "bytes", "detail")
DETAIL_WIDTH = 60


async def dead_letters(
    clients: Clients, table: str, reason: str | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every dead letter (optionally of one reason), page by page."""
    kwargs: dict[str, Any] = {"TableName": table}
    if reason:
        kwargs["FilterExpression"] = "#r = :reason"
        kwargs["ExpressionAttributeNames"] = {"#r": "reason"}
        kwargs["ExpressionAttributeValues"] = {":reason": {"S": reason}}
    async for page in scan_pages(clients.dynamodb.scan, **kwargs):
        for item in page.get("Items", []):
            yield item


def _text(item: dict[str, Any], name: str, kind: str = "S") -> str:
    return str(item.get(name, {}).get(kind, "-"))


def render(letters: Sequence[dict[str, Any]]) -> str:
    rows = [
        (
            _text(item, "shardId"),
            _text(item, "sequenceNumber"),
            _text(item, "subSequenceNumber", "N"),
            _text(item, "reason"),
            _text(item, "seenAt"),
            _text(item, "dataSize", "N"),
            _text(item, "detail")[:DETAIL_WIDTH],
        )
        for item in sorted(letters, key=lambda i: (_text(i, "shardId"), _text(i, "position")))
    ]
    lines = text_table(COLUMNS, rows)
    counts = Counter(_text(item, "reason") for item in letters)
    summary = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())) or "none"
    return "\n".join([f"{len(letters)} dead letters ({summary})", *lines])


@dataclasses.dataclass
class ReplayReport:
    replayed: int = 0
    still_failing: Counter[str] = dataclasses.field(default_factory=Counter)
    truncated: int = 0  # stored without all their bytes: replay them from the stream instead

    def lines(self) -> list[str]:
        failing = ", ".join(f"{r} {n}" for r, n in sorted(self.still_failing.items()))
        return [
            f"replayed and removed from the dead-letter table: {self.replayed}",
            f"still failing (kept): {sum(self.still_failing.values())}"
            + (f" ({failing})" if failing else ""),
            f"kept because their data was truncated: {self.truncated}",
        ]


async def replay(
    clients: Clients,
    table: str,
    dlq_table: str,
    handler: Handler,
    *,
    reason: str | None = None,
    batch: int = 500,
    handler_spec: str | None = None,
) -> ReplayReport:
    """``handler_spec`` names the handler in messages (TELEMAX_HANDLER); by default its
    ``module:name``. A table keyed otherwise than the handler declares is a ConfigError."""
    spec = handler_spec or spec_of(handler)
    key_names = await table_key_names(clients.dynamodb, table, handler, spec)
    metrics = Metrics(stream="dlq-replay")
    sink = BatchSink(
        botocore_batch_writer(clients.dynamodb),
        table,
        key_names,
        concurrency=asyncio.Semaphore(8),
        metrics=metrics,
    )
    report = ReplayReport()
    pending: list[tuple[dict[str, Any], Item]] = []
    async for letter in dead_letters(clients, dlq_table, reason):
        if letter.get("dataTruncated", {}).get("BOOL"):
            report.truncated += 1
            continue
        data: bytes = letter.get("data", {}).get("B", b"")
        try:
            pending.append((letter, handler(data)))
        except InvalidRecord as exc:
            report.still_failing[exc.reason] += 1
        except Exception:
            report.still_failing["handler_error"] += 1
        if len(pending) >= batch:
            await _write(clients, dlq_table, sink, pending, report)
            pending = []
    await _write(clients, dlq_table, sink, pending, report)
    return report


async def _write(
    clients: Clients,
    dlq_table: str,
    sink: BatchSink,
    pending: list[tuple[dict[str, Any], Item]],
    report: ReplayReport,
) -> None:
    if not pending:
        return
    refused = {r.position: r.reason for r in await sink.write([item for _, item in pending])}
    for position, (letter, _) in enumerate(pending):
        if position in refused:
            report.still_failing[refused[position]] += 1
            continue
        # Written durably: the dead letter has done its job.
        await clients.dynamodb.delete_item(
            TableName=dlq_table,
            Key={name: letter[name] for name in deadletter.KEY_NAMES},
        )
        report.replayed += 1
