"""The archive of queue messages (the SQS source, and SQS events in the Lambda handler): each
message's records and dead letters in exactly one object, whatever SQS delivers again.

A message has no position in a stream, and a redelivered one comes in another batch, so no
object name can be reproduced from a batch. Instead each message names its object in the
ledger table (the alerts' ledger, ``TELEMAX_ALERT_LEDGER_TABLE``), before the object is
written — one conditional PutItem per message and part:

1. **Claim** ``archive|{part}|{queue}|{message id}`` → this attempt's object name, unless a
   claim is there (our own retry's counts as ours).
2. **Put** the object, conditionally (``If-None-Match: *``), holding the claimed entries only.
3. A message found claimed for *another* object: if that object exists, the message is
   archived already (a redelivery after its delete failed or its receiver died) and is
   skipped; if not, its claimant died between claim and put — or is still writing. The claim
   is taken over (a conditional update on the claim seen) once it is ``stale_after_s`` old
   (the queue's visibility timeout: a live receiver keeps its messages invisible that long);
   until then the message is *busy* and comes back later, not deleted.

The one gap, as for alerts: a receiver that stalls longer than that after its claim and then
writes its object leaves a message in two objects. Ledger items expire through the table's TTL
after ``retention_s``, which must outlast any redelivery (SQS keeps a message 14 days at most).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.pipeline.archive import Segment
from consumer.pipeline.archiver import (
    ArchiveTarget,
    S3Wire,
    archive_target,
    part_name,
    put_once,
)
from consumer.pipeline.convert import Record
from consumer.pipeline.entries import entries_of
from consumer.pipeline.pieces import Entry, one_each
from consumer.pipeline.sink import Sink
from consumer.pipeline.stage import Progress
from kernel.aws import Clients, error_code, unless_fenced
from kernel.logs import get as get_logger

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client

MISSING = frozenset({"404", "NotFound", "NoSuchKey"})
OURS, DONE, BUSY = "ours", "done", "busy"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One batch's entries and the object name this attempt writes them under."""

    name: str
    entries: tuple[Entry, ...]


class MessageArchiveWire(S3Wire):
    """Attempts to S3, each message claimed in the ledger first."""

    def __init__(
        self,
        s3: S3Client,
        dynamodb: DynamoDBClient,
        target: ArchiveTarget,
        *,
        ledger_table: str,
        queue: str,
        stale_after_s: float,
        retention_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(s3, target)
        self._db = dynamodb
        self._ledger = ledger_table
        self._queue = queue
        self._stale_ms = int(stale_after_s * 1000)
        self._retention_s = retention_s
        self._wall = wall_clock
        self._busy: dict[str, set[str]] = {}
        self._log = get_logger(queue=queue)

    def identity(self, entry: Attempt) -> Hashable:
        return entry.name

    def busy(self, attempt: Attempt) -> set[str]:
        """Message ids of ``attempt`` claimed by a receiver that may still be writing."""
        return self._busy.pop(attempt.name, set())

    async def send(self, chunk: Sequence[Attempt]) -> Sequence[Attempt]:
        for attempt in chunk:
            await self._archive(attempt)
        return []

    async def _archive(self, attempt: Attempt) -> None:
        """Claim, then put what is ours; idempotent (a retry finds its own claims)."""
        wanted = {(e.position[0], e.letter): e.hour for e in attempt.entries}
        verdicts = await asyncio.gather(
            *(
                self._claim(attempt.name, mid, letters, hour)
                for (mid, letters), hour in wanted.items()
            )
        )
        verdict = dict(zip(wanted, verdicts, strict=True))
        self._busy[attempt.name] = {mid for (mid, _), v in verdict.items() if v == BUSY}
        ours = [e for e in attempt.entries if verdict[(e.position[0], e.letter)] == OURS]
        for letters in (False, True):
            for hour in dict.fromkeys(e.hour for e in ours if e.letter is letters):
                run = Segment("", tuple(e for e in ours if e.letter is letters and e.hour == hour))
                key = self.target.key(part_name(letters), run, attempt.name)
                await put_once(self._s3, self.target, key, run, letters)  # exists: our retry's

    def _claim_id(self, message_id: str, letters: bool) -> dict[str, Any]:
        return {"S": f"archive|{part_name(letters)}|{self._queue}|{message_id}"}

    def _claim_item(self, claim_id: dict[str, Any], name: str) -> dict[str, Any]:
        now = self._wall()
        return {
            "alertId": claim_id,
            "object": {"S": name},
            "claimedAt": {"N": str(int(now * 1000))},
            "expiresAt": {"N": str(int(now + self._retention_s))},
        }

    async def _claim(self, name: str, message_id: str, letters: bool, hour: str) -> str:
        claim_id = self._claim_id(message_id, letters)
        claimed = await unless_fenced(
            self._db.put_item(
                TableName=self._ledger,
                Item=self._claim_item(claim_id, name),
                ConditionExpression="attribute_not_exists(alertId) OR #o = :mine",
                ExpressionAttributeNames={"#o": "object"},
                ExpressionAttributeValues={":mine": {"S": name}},
            )
        )
        if claimed is not None:
            return OURS
        found = await self._db.get_item(
            TableName=self._ledger, Key={"alertId": claim_id}, ConsistentRead=True
        )
        item = found.get("Item")
        if item is None:  # expired between the two calls: claim again on a retry
            return BUSY
        theirs, claimed_at = item["object"]["S"], item["claimedAt"]["N"]
        if await self._exists(
            self.target.partition(part_name(letters), hour) + theirs + ".json.gz"
        ):
            return DONE
        if int(self._wall() * 1000) - int(claimed_at) < self._stale_ms:
            return BUSY
        taken = await unless_fenced(
            self._db.put_item(
                TableName=self._ledger,
                Item=self._claim_item(claim_id, name),
                ConditionExpression="#o = :theirs AND claimedAt = :seen",
                ExpressionAttributeNames={"#o": "object"},
                ExpressionAttributeValues={":theirs": {"S": theirs}, ":seen": {"N": claimed_at}},
            )
        )
        if taken is None:
            return BUSY
        self._log.info("archive_claim_taken_over", message_id=message_id, was=theirs)
        return OURS

    async def _exists(self, key: str) -> bool:
        try:
            await self._s3.head_object(Bucket=self.target.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in MISSING:
                return False
            raise
        return True


class MessageArchive:
    """What a queue's receivers archive with."""

    def __init__(self, wire: MessageArchiveWire, metrics: Metrics) -> None:
        self.target = wire.target
        self._wire = wire
        self._sink: Sink[Attempt] = Sink(
            wire, concurrency=asyncio.Semaphore(4), metrics=metrics, wants="an attempt"
        )

    async def write(self, entries: Sequence[Entry]) -> set[str]:
        """Archive every entry exactly once (retried until it is; raises otherwise); answer
        the message ids that must wait (claimed by a receiver that may still be writing)."""
        if not entries:
            return set()
        attempt = Attempt(f"sqs-{uuid.uuid4().hex}", tuple(entries))
        await self._sink.write([attempt])
        return self._wire.busy(attempt)


def message_archive_for(
    settings: Settings, clients: Clients, metrics: Metrics, queue: str
) -> MessageArchive | None:
    target = archive_target(settings)
    if target is None:
        return None
    wire = MessageArchiveWire(
        clients.s3,
        clients.dynamodb,
        target,
        ledger_table=settings.alert_ledger_table,
        queue=queue,
        stale_after_s=settings.sqs_visibility_s,
        retention_s=settings.alert_ledger_retention_s,
    )
    return MessageArchive(wire, metrics)


async def archive_done(
    archive: MessageArchive,
    progress: Progress,
    records: Sequence[Record],
    undone: set[str],
    queue: str,
) -> set[str]:
    """Archive the entries of the messages that are done; answer those that must wait."""
    target = archive.target
    shard = f"sqs:{queue}"
    # (with lines: an Entry each)
    entries = one_each(entries_of(progress, records, target.feed, queue, shard, target.raw_json))
    return await archive.write([e for e in entries if e.position[0] not in undone])
