"""The archive as a destination: segments to S3 (gzip JSON lines, SSE-KMS), each written once,
and a shard's checkpoint held back until its records are in a written segment.

Writing a segment (:meth:`ArchiveWire.commit`): the records object first, conditionally
(``If-None-Match: *``) — it is the commit, written even when it holds no record — with the
segment's last position in its metadata; then the dead letters' object, conditionally too.
When the records object exists already (an earlier owner wrote it beyond the checkpoint, or our
own retry), its metadata says where that segment ends, and the segment is adopted: its dead
letters' object is (re)written for exactly that range and the records after it start the next
segment. See :mod:`consumer.pipeline.archive` for why each record lands in one object.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from isal import isal_zlib

from consumer.config import Settings, feed_of
from consumer.feeds import FEEDS
from consumer.metrics import Metrics
from consumer.pipeline.archive import Segment, position_name
from consumer.pipeline.pieces import RAW_DEFLATE, Packed, Position, Run, order
from consumer.pipeline.segmented import Committer, committer
from kernel.aws import Clients, config_error_from, error_code, patiently
from kernel.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

EXISTS = "PreconditionFailed"  # S3's answer to If-None-Match: * on an existing key
# ISA-L's gzip (igzip) at level 1 (standard gzip: any gunzip reads it): on the archive's
# TELEMAX lines, 0.19 µs a line and 8.5 % of their size, against zlib-ng's level 2 at 0.45 µs
# and 8.7 %, its level 1 at 0.33 µs and 12.8 % (isal 1.9.1, zlib-ng 1.1.0, 30,000 lines of
# 345 bytes fed a batch at a time, in process, 2026-12-05). Its levels 0 and 2 cost the same
# as 1; 3 costs 0.85.
COMPRESS_LEVEL = 1
# a gzip member's header: deflate, no name or comment, time 0, no extra flags, OS unknown
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


@dataclasses.dataclass(frozen=True)
class ArchiveTarget:
    bucket: str
    prefix: str  # ends with "/" unless empty
    feed: str
    kms_key: str = ""  # empty: the bucket's default key (SSE-KMS either way)
    raw_json: bool = False  # the records are JSON objects: archived as they came

    def key(self, part: str, segment: Segment, name: str | None = None) -> str:
        return f"{self.partition(part, segment.hour)}{name or segment.name}.json.gz"

    def partition(self, part: str, hour: str) -> str:
        return f"{self.prefix}{part}/feed={self.feed}/{hour}/"


class S3Wire:
    """What every archive wire is to the sink engine: one entry per chunk, to S3."""

    destination = "archive"
    api = "PutObject"
    max_chunk = 1
    refusal_codes: frozenset[str] = frozenset()
    refusal_reason = "rejected_by_s3"

    def __init__(self, s3: S3Client, target: ArchiveTarget) -> None:
        self._s3 = s3
        self.target = target


class ArchiveWire(S3Wire):
    """Segments to S3, one per chunk; :meth:`outcome` tells what became of each."""

    def __init__(self, s3: S3Client, target: ArchiveTarget) -> None:
        super().__init__(s3, target)
        self._outcomes: dict[str, Position | None] = {}

    def identity(self, entry: Segment) -> Hashable:
        return entry.name

    async def send(self, chunk: Sequence[Segment]) -> Sequence[Segment]:
        for segment in chunk:
            self._outcomes[segment.name] = await self.commit(segment)
        return []

    def outcome(self, segment: Segment) -> Position | None:
        """None: written as given; else the end of the segment found there (adopted)."""
        return self._outcomes.pop(segment.name)

    async def commit(self, segment: Segment) -> Position | None:
        found = await self._put(segment, letters=False)
        if found is None:
            await self._put(segment, letters=True)
            return None
        if order(found) <= order(segment.last):  # what the segment found holds, we have
            await self._put(segment.until(found), letters=True)
        return found

    async def _put(self, segment: Segment, letters: bool) -> Position | None:
        """Write one part; None, or (when it exists) the end its metadata records."""
        if letters and not segment.count(letters=True):
            return None
        key = self.target.key(part_name(letters), segment)
        if await put_once(self._s3, self.target, key, segment, letters):
            return None
        head = await self._s3.head_object(Bucket=self.target.bucket, Key=key)
        meta: Mapping[str, str] = head.get("Metadata", {})
        return meta["last-sequence"], int(meta["last-sub"])


def packed_lines(lines: bytes) -> Packed:
    """A run's lines packed as its buffer holds them: raw deflate, sync-flushed."""
    packer = _compressor()
    deflate = packer.compress(lines) + packer.flush(isal_zlib.Z_SYNC_FLUSH)
    return Packed(deflate, isal_zlib.crc32(lines), len(lines))


def gzipped(segment: Segment, letters: bool) -> bytes:
    """The part's lines as one gzip member: the deflate blocks of its packed runs as they
    are, and between them the other pieces' lines fed to a compressor a piece (a batch's
    lines) at a time, sync-flushed before a packed run, without a joined copy of them — a
    segment's 8 MiB allocated and touched for each object, and held while it is compressed.
    Deflate blocks compressed apart follow one another in one stream as pigz's do: each part
    ends on a byte and none is the last block but the empty one that ends the member. (One
    member, not one a run: some readers stop after the first — Trino's before 422, Bun's.)"""
    out = [GZIP_HEADER]
    crc = size = 0
    packer: Any = None  # the blocks under way, of the pieces not packed
    for piece in segment.entries:
        if piece.letter is not letters:
            continue
        packed = piece.packed if type(piece) is Run else None
        if packed is not None:
            if packer is not None:
                out.append(packer.flush(isal_zlib.Z_SYNC_FLUSH))
                packer = None
            out.append(packed.deflate)
            crc = isal_zlib.crc32_combine(crc, packed.crc, packed.size)
            size += packed.size
            continue
        lines = piece.line
        packer = packer or _compressor()
        out.append(packer.compress(lines))
        crc = isal_zlib.crc32(lines, crc)
        size += len(lines)
    out.append((packer or _compressor()).flush(isal_zlib.Z_FINISH))  # the last block
    out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))  # gzip's trailer: CRC-32, ISIZE
    return b"".join(out)


def _compressor() -> Any:
    """Raw deflate blocks: the gzip header and trailer are gzipped's."""
    return isal_zlib.compressobj(COMPRESS_LEVEL, isal_zlib.DEFLATED, RAW_DEFLATE)


def part_name(letters: bool) -> str:
    return "deadletters" if letters else "records"


async def put_once(
    s3: S3Client, target: ArchiveTarget, key: str, segment: Segment, letters: bool
) -> bool:
    """Put one part of ``segment`` at ``key`` unless an object is there (``If-None-Match``):
    True when written, False when it existed."""
    last = segment.last
    extra: dict[str, Any] = {"ServerSideEncryption": "aws:kms"}
    if target.kms_key:
        extra["SSEKMSKeyId"] = target.kms_key
    try:
        await s3.put_object(
            Bucket=target.bucket,
            Key=key,
            Body=gzipped(segment, letters),
            IfNoneMatch="*",
            ContentType="application/x-ndjson",
            Metadata={
                "first": position_name(segment.first),
                "last-sequence": last[0],
                "last-sub": str(last[1]),
                "lines": str(segment.count(letters)),
            },
            **extra,
        )
        return True
    except Exception as exc:
        if error_code(exc) != EXISTS:
            raise
    return False


def archive_target(settings: Settings) -> ArchiveTarget | None:
    """Where ``settings`` archive to, or None when the archive is off."""
    if not settings.archive_bucket:
        return None
    feed = feed_of(settings)
    return ArchiveTarget(
        settings.archive_bucket,
        settings.archive_prefix,
        feed.name,
        settings.archive_kms_key,
        # the feed's own validation decoded every record as a JSON object
        raw_json=FEEDS.get(feed.name) is feed and settings.handler == feed.handler_spec,
    )


def archive_committer(
    settings: Settings, clients: Clients, metrics: Metrics, slots: asyncio.Semaphore
) -> Committer | None:
    """The archive as a committer of segments, or None when it is off."""
    target = archive_target(settings)
    if target is None:
        return None
    return committer("archive", ArchiveWire(clients.s3, target), metrics, slots)


async def check_archive(clients: Clients, settings: Settings) -> None:
    """Start-up: the bucket is there and ours to use (one line if not)."""
    if not settings.archive_bucket:
        return
    what = f"S3 bucket {settings.archive_bucket!r}"
    try:
        await patiently(lambda: clients.s3.head_bucket(Bucket=settings.archive_bucket))
    except Exception as exc:
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(f"{what} does not exist") from None
        if code in ("403", "AccessDenied"):
            raise ConfigError(f"not allowed to use {what}") from None
        raise config_error_from(exc, what) or exc from None
