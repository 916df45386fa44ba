"""``insights [--from T --to T] [--by hour|group] [--format table|json|csv] [--plot FILE]``:
the feed's event-time windows, merged across every shard, read from the insights table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.config import Settings, feed_of
from consumer.insights.cells import Cell, CellKey
from consumer.insights.codec import cells_of
from consumer.insights.report import as_csv, as_json_lines, group_field, rows, text_report
from consumer.insights.store import part_of
from consumer.insights.windows import InsightSpec
from kernel.aws import AWS_ERRORS, Clients, config_error_from, scan_pages
from kernel.backoff import Backoff
from kernel.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

DEFAULT_SPAN = timedelta(days=1)


async def read_cells(
    dynamodb: DynamoDBClient, table: str, feed: str, days: Sequence[str]
) -> tuple[dict[CellKey, Cell], int]:
    """Every committed cell of ``days``, merged; and the number of segments merged."""
    parts: dict[tuple[str, str, str, str | None], list[bytes]] = {}
    for day in days:
        async for page in scan_pages(
            dynamodb.query,
            TableName=table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"D#{feed}#{day}"}},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                found = part_of(item["sk"]["S"])
                parts.setdefault(found, []).append(bytes(item["cells"]["B"]))
    committed = await _commits(dynamodb, table, feed, {(s, f) for s, f, _, _ in parts})
    cells: dict[CellKey, Cell] = {}
    merged = 0
    for (shard, first, end, attempt), blobs in parts.items():
        if committed.get((shard, first)) != (end, attempt):
            continue  # an attempt that never committed, or not this end, or not this attempt
        merged += 1
        for blob in blobs:
            for key, cell in cells_of(blob):
                mine = cells.get(key)
                if mine is None:
                    cells[key] = cell
                else:
                    mine.merge(cell)
    return cells, merged


async def _commits(
    dynamodb: DynamoDBClient, table: str, feed: str, segments: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(shard, first) -> the end and the attempt its commit records (None: a commit an
    earlier version wrote, without one), for those committed."""
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    keys = [
        {"pk": {"S": f"C#{feed}#{shard}"}, "sk": {"S": first}} for shard, first in sorted(segments)
    ]
    backoff = Backoff(base=0.05, cap=2.0)
    while keys:
        chunk, keys = keys[:100], keys[100:]
        request: Any = {table: {"Keys": chunk, "ConsistentRead": True}}
        answer: Any = await dynamodb.batch_get_item(RequestItems=request)
        for item in answer.get("Responses", {}).get(table, []):
            shard = str(item["pk"]["S"]).split("#", 2)[2]
            attempt = item.get("attempt")
            end = str(item["end"]["S"])
            found[(shard, str(item["sk"]["S"]))] = end, None if attempt is None else attempt["S"]
        left: Any = answer.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
        if left:
            keys = list(left) + keys
            await backoff.sleep()
    return found


def parse_time(raw: str, flag: str) -> datetime:
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{flag}: {raw!r} is not an ISO-8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def span(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[from, to): by default the day up to now."""
    stop = parse_time(end, "--to") if end else now
    begin = parse_time(start, "--from") if start else stop - DEFAULT_SPAN
    if begin >= stop:
        raise ConfigError("--from must be before --to")
    return begin, stop


def days_between(begin: datetime, stop: datetime, spec: InsightSpec) -> list[str]:
    """The days whose data items can hold a window starting in [begin, stop)."""
    first = datetime.fromtimestamp(int(begin.timestamp() // spec.window_s) * spec.window_s, UTC)
    days, day = [], first.date()
    while day <= stop.date():
        days.append(day.isoformat())
        day += timedelta(days=1)
    return days


async def insights(
    clients: Clients,
    settings: Settings,
    *,
    start: str | None,
    end: str | None,
    by: str,
    output: str,
    plot: str | None,
    now: datetime | None = None,
) -> str:
    """What the command prints."""
    feed = feed_of(settings)
    spec = feed.insights
    if spec is None:
        raise ConfigError(f"feed {feed.name} declares no insights")
    if by != "hour":
        group_field(spec, by)  # a wrong --by is one line, before any call
    begin, stop = span(start, end, now or datetime.now(UTC))
    table = settings.insights_table
    try:
        cells, _ = await read_cells(
            clients.dynamodb, table, feed.name, days_between(begin, stop, spec)
        )
    except AWS_ERRORS as exc:
        raise config_error_from(exc, f"DynamoDB insights table {table!r}") or exc from None
    found = rows(spec, cells, begin.timestamp(), stop.timestamp())
    text = {"json": as_json_lines, "csv": as_csv}.get(output)
    printed = text(found) if text else text_report(spec, found, by)
    if plot:
        from consumer.insights.plot import render

        written = render(spec, found, Path(plot), feed.name)
        printed += f"charts written to {', '.join(str(p) for p in written)}\n"
    return printed
