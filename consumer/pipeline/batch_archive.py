"""The archive of batches whose start is not ours to choose: the Lambda handler's.

A worker cuts its own objects and moves its checkpoint only to an object's end, so a replay
starts at an object's first position (:mod:`consumer.pipeline.archive`). Lambda decides where
a batch starts: a retry after a crash or a timeout may be bisected, and after a partial
failure it starts at the record named in the answer — either way possibly *inside* an object
an earlier invocation wrote. So these objects are named by their span,
``{shard}-upto-{last}-from-{first}``, which sorts by the last position, and before writing
the entries from position ``p`` on, one ``ListObjectsV2`` (``StartAfter`` the name ``p``
would have as a last, ``MaxKeys`` 1) finds the object with the smallest last at or after
``p`` in ``p``'s partition. When that object starts at or before ``p``, everything up to its
last is archived already; the rest is written as runs of one hour, each stopping short of an
object that starts further on (:func:`~consumer.pipeline.archive.next_run`). Puts are
conditional (``If-None-Match: *``): the same span written twice is one object.

Exact as long as a batch is a run of consecutive positions of its shard — Lambda's
``ParallelizationFactor`` 1, its default and what ``deploy/telemax-lambda.yaml`` sets; with
several concurrent batches per shard, a batch holds only some partition keys of its range.
Records and dead letters are two independent parts, each with its own objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

from orjson import loads

from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.pipeline.archive import UPTO, next_run, position_name, span_of
from consumer.pipeline.archiver import (
    ArchiveTarget,
    S3Wire,
    archive_target,
    part_name,
    put_once,
)
from consumer.pipeline.pieces import Entry, Position
from consumer.pipeline.sink import Sink
from kernel.aws import Clients
from kernel.errors import ConfigError
from kernel.logs import get as get_logger

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


@dataclasses.dataclass(frozen=True)
class Part:
    """One part (records or dead letters) of one shard's batch, in stream order."""

    shard_id: str
    letters: bool
    entries: tuple[Entry, ...]


class BatchArchiveWire(S3Wire):
    """Parts to S3 as span-named objects, skipping what an earlier invocation archived."""

    def __init__(self, s3: S3Client, target: ArchiveTarget) -> None:
        super().__init__(s3, target)
        self._log = get_logger()

    def identity(self, entry: Part) -> Hashable:
        return entry.shard_id, entry.letters, entry.entries[0].position

    async def send(self, chunk: Sequence[Part]) -> Sequence[Part]:
        for part in chunk:
            await self._archive(part)
        return []

    async def _archive(self, part: Part) -> None:
        """Idempotent: a retry lists again and finds what an attempt before it wrote."""
        entries: Sequence[Entry] = part.entries
        name = part_name(part.letters)
        while entries:
            key, found = await self._covering(name, part.shard_id, entries[0])
            covered, run = next_run(part.shard_id, entries, found)
            if run is None:
                await self._check_holds(key, entries[:covered])
                self._log.info(
                    "archive_object_adopted",
                    shard_id=part.shard_id,
                    part=name,
                    first=entries[0].position,
                    entries=covered,
                )
                entries = entries[covered:]
                continue
            key = self.target.key(name, run, run.span_name)
            await put_once(self._s3, self.target, key, run, part.letters)  # exists: the same
            entries = entries[len(run.entries) :]

    async def _check_holds(self, key: str, entries: Sequence[Entry]) -> None:
        """The object an entry is skipped for holds it — else batches are not runs of the
        shard (several concurrent batches per shard): stop, loudly, before anything is lost.
        Only after a retry (or with that misconfiguration) does a batch meet an object."""
        answer = await self._s3.get_object(Bucket=self.target.bucket, Key=key)
        async with answer["Body"] as body:
            lines = gzip.decompress(await body.read()).splitlines()
        held = {(str(v["sequenceNumber"]), int(v["subSequenceNumber"])) for v in map(loads, lines)}
        missing = [e.position for e in entries if e.position not in held]
        if missing:
            raise ConfigError(
                f"TELEMAX_ARCHIVE_BUCKET: {key} spans {missing[0][0]} but does not hold it: "
                "batches of a shard overlap; set the event source mapping's "
                "ParallelizationFactor to 1 while archiving"
            )

    async def _covering(
        self, part: str, shard_id: str, entry: Entry
    ) -> tuple[str, tuple[Position, Position] | None]:
        """The key and (first, last) of the object with the smallest last at or after
        ``entry``; ("", None) when there is none."""
        prefix = f"{self.target.partition(part, entry.hour)}{shard_id}{UPTO}"
        answer = await self._s3.list_objects_v2(
            Bucket=self.target.bucket,
            Prefix=prefix,
            StartAfter=prefix + position_name(entry.position),
            MaxKeys=1,
        )
        contents: list[Any] = list(answer.get("Contents", []))
        if not contents:
            return "", None
        key = str(contents[0]["Key"])
        return key, span_of(key[len(prefix) :])


class BatchArchive:
    """What the Lambda handler archives with: a batch's entries, both parts."""

    def __init__(self, s3: S3Client, target: ArchiveTarget, metrics: Metrics) -> None:
        self.target = target
        self._sink: Sink[Part] = Sink(
            BatchArchiveWire(s3, target),
            concurrency=asyncio.Semaphore(2),
            metrics=metrics,
            wants="a batch's archive",
        )

    async def write(self, shard_id: str, entries: Sequence[Entry]) -> None:
        """Every entry archived exactly once (retried until it is; raises otherwise)."""
        parts = [
            Part(shard_id, letters, found)
            for letters in (False, True)
            if (found := tuple(e for e in entries if e.letter is letters))
        ]
        await self._sink.write(parts)


def batch_archive_for(
    settings: Settings, clients: Clients, metrics: Metrics
) -> BatchArchive | None:
    target = archive_target(settings)
    return None if target is None else BatchArchive(clients.s3, target, metrics)
