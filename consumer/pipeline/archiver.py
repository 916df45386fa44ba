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
import base64
import dataclasses
import itertools
import struct
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson
from isal import isal_zlib

from consumer.config import Settings, feed_of
from consumer.feeds import FEEDS
from consumer.metrics import Metrics
from consumer.pipeline.alerts import json_number, record_of
from consumer.pipeline.archive import (
    RAW_DEFLATE,
    Entry,
    Packed,
    Piece,
    Position,
    Run,
    Segment,
    hour_of,
    line_ends,
    order,
    position_name,
)
from consumer.pipeline.convert import Record
from consumer.pipeline.segmented import Committer, committer
from consumer.pipeline.stage import Progress
from kernel.aws import Clients, config_error_from, error_code, patiently
from kernel.errors import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

ARRIVAL = "ApproximateArrivalTimestamp"
EXISTS = "PreconditionFailed"  # S3's answer to If-None-Match: * on an existing key
# ISA-L's gzip (igzip) at level 1 (standard gzip: any gunzip reads it): on the archive's
# TELEMAX lines, 0.19 µs a line and 8.5 % of their size, against zlib-ng's level 2 at 0.45 µs
# and 8.7 %, its level 1 at 0.33 µs and 12.8 % (isal 1.9.1, zlib-ng 1.1.0, 30,000 lines of
# 345 bytes fed a batch at a time, in process, 2026-12-05). Its levels 0 and 2 cost the same
# as 1; 3 costs 0.85.
COMPRESS_LEVEL = 1
# a gzip member's header: deflate, no name or comment, time 0, no extra flags, OS unknown
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# The usual batch's lines are made this many at a time and the texts joined: what one slice
# touches (its records' JSON, its columns, its text) stays in the CPU's caches. The text of a
# 7,500-record batch in one slice: 0.77 µs a line; in slices of 512-2,048: 0.57 (in process,
# 2026-12-05; slices of 128: 0.60).
LINES_AT_ONCE = 1024


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


def entries_of(
    progress: Progress,
    records: Sequence[Record],
    feed: str,
    stream: str,
    shard_id: str,
    raw_json: bool = False,
    *,
    lines: bool = True,
    facts: Callable[[list[Any], list[Position], list[float | None]], Any] | None = None,
) -> list[Piece]:
    """The archive's entries of a batch the write stage finished: a line per stored item and
    per stored dead letter, in the batch's order (every position is a record of ``records``).
    ``raw_json``: the records are JSON objects (the built-in feeds refuse anything else),
    embedded as they came instead of re-encoded. ``lines``: the archive's JSON lines (off: empty
    lines, the insights alone); ``facts``: what the insights keep of the batch's stored items,
    given them, their positions and arrival times (``consumer.insights.kept.batch_facts``):
    each item's entry points at it. Without lines and without a dead letter, the items are one
    :class:`~consumer.pipeline.archive.Run`."""
    hours: dict[Any, str] = {}

    def hour(when: Any) -> str:
        if not lines:  # the insights alone: no object, no hour to name it by
            return ""
        if when not in hours:
            hours[when] = hour_of(when)
        return hours[when]

    # a batch with a dead letter to place among them: an entry each, in the batch's order
    as_runs = not any(progress.stored)
    if not lines:
        found = _bare_entries(progress, facts, as_run=as_runs)
    else:
        found = _lined_entries(progress, feed, stream, shard_id, raw_json, facts, as_runs)
    items_found = len(found)
    # the dead letters' arrival times, by sequence number (most batches have no letter)
    arrival = {r["SequenceNumber"]: r.get(ARRIVAL) for r in records} if progress.letters else {}
    for letter, stored in zip(progress.letters, progress.stored, strict=True):
        if not stored:
            continue
        when = arrival.get(letter.sequence_number)
        where = hour(when)
        spot = (letter.sequence_number, letter.sub_sequence)
        text = b""
        if lines:
            text = _line(
                {
                    "feed": feed,
                    "stream": stream,
                    "shard": shard_id,
                    "sequenceNumber": letter.sequence_number,
                    "subSequenceNumber": letter.sub_sequence,
                    "partitionKey": letter.partition_key,
                    "arrival": _epoch(when),
                    "reason": letter.reason,
                    "detail": letter.detail,
                    "data": base64.b64encode(letter.data).decode(),
                }
            )
        found.append(Entry(spot, where, text, letter=True))
    if len(found) == items_found:
        return found  # the items alone: in the batch's order already, as converted
    # the batch's order: the stream's for Kinesis; a queue's message ids have no other
    rank = {r["SequenceNumber"]: n for n, r in enumerate(records)}
    found.sort(key=lambda e: (rank.get(e.position[0], len(rank)), e.position[1], e.letter))
    return found


def _lined_entries(
    progress: Progress,
    feed: str,
    stream: str,
    shard_id: str,
    raw_json: bool,
    facts: Callable[[list[Any], list[Position], list[float | None]], Any] | None,
    as_runs: bool,
) -> list[Piece]:
    """The stored items' entries with their archive lines: with ``as_runs``, a Run for each
    hour of the batch (usually one) instead of an Entry a record — the objects a segment
    holds until it is written, which the collector walks. In process (60,000 readings in
    batches of 500, 1 MiB segments, best of 5): the entries 2.9-3.0 -> 2.6-2.7 µs a record,
    the buffer's cutting 0.35 -> 0.01."""
    converted = progress.converted
    made_of = converted.data
    dumps = orjson.dumps
    # every line's start: {"feed":…,"stream":…,"shard":…,"sequenceNumber":
    head = dumps({"feed": feed, "stream": stream, "shard": shard_id})[:-1] + b',"sequenceNumber":'
    usual = _usual_lines(progress, head) if raw_json else None
    if usual is not None:
        positions, text, hour, arrivals = usual
        # (the entries as they are: the insights read an encoded one's values)
        batch = facts(list(converted.entries), positions, arrivals) if facts is not None else None
        return _pieces(positions, text, [hour] * len(positions), [], batch, as_runs)
    hours: dict[int | None, str] = {}  # by hour since the epoch
    at: list[Position] = []
    lines: list[bytes] = []
    wheres: list[str] = []  # each line's hour
    changes: list[int] = []  # where the hour changes
    kept: list[Any] = []  # with the insights: the stored items and their arrivals
    kept_arrivals: list[float | None] = []
    keys: dict[str, bytes] = {}  # a partition key's JSON (a batch's keys repeat: devices)
    for position in progress.stored_items():
        item = converted.items[position]
        record, sub = converted.origins[position]
        sequence = record["SequenceNumber"]
        when = record.get(ARRIVAL)
        arrived = when if type(when) is float else _epoch(when)
        # named once per hour of the batch, not per arrival time (each record has its own):
        # hour_of cost 5 µs a record, the archive's largest cost per record (2026-12-04);
        # hour_of names a time by the hour it is in, as this bucket does
        bucket = None if arrived is None else int(arrived // 3600)
        where = hours.get(bucket) or hours.setdefault(bucket, hour_of(when))
        key = record.get("PartitionKey", "")
        data = made_of[position] if raw_json and position < len(made_of) else None
        if data is not None and b"\n" not in data and b"\r" not in data:
            # the record's own JSON bytes embedded (a third of the cost of re-encoding the
            # item), the metadata from bytes made once a batch (a key's once a key):
            # 0.9 -> 0.45 µs a line against a dict dumped a record (measured 2026-12-04)
            line = b"".join(
                (
                    head,
                    dumps(sequence),
                    b',"subSequenceNumber":',
                    str(sub).encode(),
                    b',"partitionKey":',
                    keys.get(key) or keys.setdefault(key, dumps(key)),
                    b',"arrival":',
                    dumps(arrived),
                    b',"record":',
                    data.strip(),
                    b"}\n",
                )
            )
        else:
            line = _line(
                {
                    "feed": feed,
                    "stream": stream,
                    "shard": shard_id,
                    "sequenceNumber": sequence,
                    "subSequenceNumber": sub,
                    "partitionKey": key,
                    "arrival": arrived,
                    "record": record_of(item),
                }
            )
        if wheres and where != wheres[-1]:
            changes.append(len(wheres))
        at.append((sequence, sub))
        lines.append(line)
        wheres.append(where)
        if facts is not None:
            kept.append(item)
            kept_arrivals.append(arrived)
    batch = facts(kept, at, kept_arrivals) if facts is not None and kept else None
    text = b"".join(lines) if as_runs else b""  # (an Entry a line: its own)
    return _pieces(at, text, wheres, changes, batch, as_runs, lines)


def _pieces(
    at: list[Position],
    text: bytes,
    hours: list[str],
    changes: list[int],
    batch: Any,
    as_runs: bool,
    lines: list[bytes] | None = None,
) -> list[Piece]:
    """An Entry a line, or (``as_runs``) a Run for each hour, of ``text`` — the lines of
    ``at`` joined (``lines``: the same, if they were made one by one) —: ``changes`` are the
    indices where ``hours`` changes."""
    if not as_runs:
        if lines is None:  # (cut where line_ends says each line ends, as a Run's are)
            spans = itertools.pairwise([0, *line_ends(text)])
            lines = [text[start:stop] for start, stop in spans]
        return [
            Entry(p, hour, line, False, batch)
            for p, hour, line in zip(at, hours, lines, strict=True)
        ]
    bounds = [0, *changes, len(at)]
    # runs that are parts of the batch's lines share their ends (a whole batch's run needs
    # none: its lines are text)
    ends = line_ends(text) if changes else None
    return [
        Run(at, start, stop, batch, hours[start], text, ends)
        for start, stop in itertools.pairwise(bounds)
        if start < stop
    ]


def _usual_lines(
    progress: Progress, head: bytes
) -> tuple[list[Position], bytes, str, list[float | None]] | None:
    """The usual batch's lines a column at a time — every item stored, each made of its own
    JSON without a line break, sequence numbers of digits, arrival times as epoch floats all
    in one hour —: (positions, the lines joined, the hour, arrival times); None for any other
    batch, which :func:`_lined_entries` reads a record at a time. The same lines either way
    (a test holds them equal): in process (60,000 readings in batches of 500, best of 5) a
    batch's entries cost 1.26-1.33 µs a record a column at a time against 2.54-2.70 in the
    loop (2026-12-04; now 1.02-1.07: :func:`_joined_lines`)."""
    converted = progress.converted
    origins, made_of = converted.origins, converted.data
    count = len(origins)
    if not count or len(made_of) != count or len(progress.stored_items()) != count:
        return None
    joined = b"".join(made_of)
    if b"\n" in joined or b"\r" in joined:
        return None
    found = [record.get(ARRIVAL) for record, _ in origins]
    kinds = set(map(type, found))
    if kinds != {float}:
        if not kinds <= {float, int}:
            return None
        # a whole second comes as a JSON integer (kinesalite writes milliseconds / 1000):
        # a float, as the loop makes it, rather than the loop for the batch
        found = [float(when) for when in found]  # type: ignore[arg-type]
    arrivals = cast("list[float]", found)
    sequences: list[str] = [record["SequenceNumber"] for record, _ in origins]
    digits = "".join(sequences)
    if not (digits.isascii() and digits.isdigit()):  # (isdigit alone: any script's digits)
        return None
    first, last = min(arrivals), max(arrivals)
    if first // 3600 != last // 3600:
        return None
    subs = [sub for _, sub in origins]
    keys = [record.get("PartitionKey", "") for record, _ in origins]
    texts = []
    for lo in range(0, count, LINES_AT_ONCE):
        hi = lo + LINES_AT_ONCE
        texts.append(
            _joined_lines(
                head, sequences[lo:hi], subs[lo:hi], keys[lo:hi], arrivals[lo:hi], made_of[lo:hi]
            )
        )
    text = b"".join(texts)  # (of one: that one)
    at: list[Position] = list(zip(sequences, subs, strict=True))
    return at, text, hour_of(first), found


def _joined_lines(
    head: bytes,
    sequences: list[str],
    subs: list[int],
    keys: list[str],
    arrivals: list[float],
    made_of: list[bytes],
) -> bytes:
    """The usual lines of these records, joined: from their columns' pieces rather than a
    bytes object a line made and then joined, each column made in one call where it can be
    (the sequence numbers encoded together, the arrivals dumped together: a float's JSON is
    the same in a list). In process, a batch's entries (``entries_of``, 60,000 readings,
    best of 7), with the slices: 1.29-1.31 -> 1.10-1.12 µs a record in batches of 7,500 (as
    the bench's 4 shards read them), 1.24-1.25 -> 1.02-1.07 in batches of 500."""
    count = len(sequences)
    dumps = orjson.dumps
    named = {key: dumps(key) for key in set(keys)}
    numbers = "\n".join(sequences).encode().split(b"\n")  # (digits: no line break inside)
    times = dumps(arrivals)[1:-1].split(b",")
    sub_texts = [b"%d" % sub for sub in subs] if any(subs) else itertools.repeat(b"0", count)
    columns = (
        itertools.repeat(head + b'"', count),
        numbers,
        itertools.repeat(b'","subSequenceNumber":', count),
        sub_texts,
        itertools.repeat(b',"partitionKey":', count),
        map(named.__getitem__, keys),
        itertools.repeat(b',"arrival":', count),
        times,
        itertools.repeat(b',"record":', count),
        map(bytes.strip, made_of),
        itertools.repeat(b"}\n", count),
    )
    return b"".join(itertools.chain.from_iterable(zip(*columns, strict=True)))


def _bare_entries(
    progress: Progress,
    facts: Callable[[list[Any], list[Position], list[float | None]], Any] | None,
    as_run: bool,
) -> list[Piece]:
    """The stored items' entries without lines (the insights alone: no object, no hour to
    name it by), made in a few passes over the batch rather than one loop with a branch per
    record (measured in one process on the benchmark's TELEMAX readings, 2026-12-04); with
    ``as_run``, one Run of them all."""
    converted = progress.converted
    items = list(converted.entries)  # (the insights read an encoded entry's values)
    picked = progress.stored_items()
    if len(picked) == len(items):  # the usual batch: every item stored
        kept, origins = items, converted.origins
    else:
        kept = [items[p] for p in picked]
        origins = [converted.origins[p] for p in picked]
    if not picked:
        return []
    at: list[Position] = [(record["SequenceNumber"], sub) for record, sub in origins]
    batch = None
    if facts is not None:
        arrivals = [
            when if type(when := record.get(ARRIVAL)) is float else _epoch(when)
            for record, _ in origins
        ]
        batch = facts(kept, at, arrivals)
    if as_run:
        return [Run(at, 0, len(at), batch)]
    return [Entry(position, "", b"", False, batch) for position in at]


def _epoch(when: Any) -> float | None:
    if isinstance(when, int | float):
        return float(when)
    timestamp = getattr(when, "timestamp", None)
    return float(timestamp()) if timestamp is not None else None


def _line(value: dict[str, Any]) -> bytes:
    return orjson.dumps(value, default=json_number, option=orjson.OPT_APPEND_NEWLINE)


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
