"""A shard consumer with the archive on, on virtual time against an in-memory S3: the
checkpoint moves only to the end of a written object, the shard's end and a hand-over write
what is buffered, and a replay adopts an object written beyond the checkpoint."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
from typing import Any

import orjson
import pytest

from consumer.lease.model import SHARD_END
from consumer.pipeline.archiver import ArchiveTarget, ArchiveWire, packed_lines
from consumer.pipeline.entries import entries_of
from consumer.pipeline.segmented import Segmented, committer
from consumer.shard.lifecycle import Reason
from consumer.testing import client_error
from tests.unit.consumer.shard.test_shard_consumer import Shop, consuming, stream

pytestmark = pytest.mark.looptime

MAX_AGE_S = 5.0


class MemoryS3:
    """put_object honouring ``If-None-Match: *``, head_object; every put recorded."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.puts: list[str] = []

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        key = kwargs["Key"]
        self.puts.append(key)
        if kwargs.get("IfNoneMatch") == "*" and key in self.objects:
            raise client_error("PreconditionFailed", "At least one of the pre-conditions", 412)
        self.objects[key] = (kwargs["Body"], dict(kwargs["Metadata"]))
        return {}

    async def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return {"Metadata": self.objects[kwargs["Key"]][1]}

    def lines(self, part: str) -> list[dict[str, Any]]:
        return [
            orjson.loads(line)
            for key, (body, _) in sorted(self.objects.items())
            if key.split("/")[1] == part
            for line in gzip.decompress(body).splitlines()
        ]


def archived_shop(closed: bool, s3: MemoryS3, max_bytes: int = 1 << 20) -> tuple[Shop, Any]:
    kinesis, table, ids = stream(closed=closed)
    shop = Shop(kinesis, table)
    target, slots = ArchiveTarget("bucket", "arch/", "telemax"), asyncio.Semaphore(8)
    segments = Segmented(
        [committer("archive", ArchiveWire(s3, target), shop.metrics, slots)],  # type: ignore[arg-type]
        lambda progress, records, name, shard: entries_of(
            progress, records, "telemax", name, shard
        ),
        max_bytes,
        MAX_AGE_S,
        pack=packed_lines,  # as the worker's (consumer.pipeline.committers)
    )
    shop.context = dataclasses.replace(shop.context, segments=segments)
    return shop, ids


def archived_ids(s3: MemoryS3) -> list[str]:
    return [line["record"]["hardwareID"] for line in s3.lines("records")]


async def test_the_checkpoint_waits_for_the_object_then_moves_to_its_end() -> None:
    s3 = MemoryS3()
    shop, ids = archived_shop(closed=False, s3=s3)
    table = shop.table
    async with consuming(shop):
        await asyncio.sleep(MAX_AGE_S - 1)
        assert shop.stored() == ids, "stored at once"
        assert s3.objects == {} and table["P"].checkpoint == "TRIM_HORIZON", "not archived yet"
        await asyncio.sleep(3)
        assert sorted(archived_ids(s3)) == sorted(ids)
        last = shop.kinesis.shards["P"].records[-1]["SequenceNumber"]
        assert table["P"].checkpoint == last
    (key,) = s3.objects
    assert key.startswith("arch/records/feed=telemax/dt=unknown/hour=unknown/P-")


async def test_the_shard_end_archives_what_is_buffered_before_shard_end() -> None:
    s3 = MemoryS3()
    shop, ids = archived_shop(closed=True, s3=s3)
    assert await shop.run() is Reason.SHARD_END
    assert sorted(archived_ids(s3)) == sorted(ids)
    assert shop.table["P"].checkpoint == SHARD_END


async def test_a_hand_over_archives_what_is_buffered_then_checkpoints() -> None:
    s3 = MemoryS3()
    shop, ids = archived_shop(closed=False, s3=s3)
    async with consuming(shop):
        await asyncio.sleep(1)
        assert s3.objects == {}
    assert sorted(archived_ids(s3)) == sorted(ids)  # the stop wrote the open object
    last = shop.kinesis.shards["P"].records[-1]["SequenceNumber"]
    assert shop.table["P"].checkpoint == last


async def test_a_replay_adopts_the_object_its_predecessor_wrote_beyond_the_checkpoint() -> None:
    s3 = MemoryS3()
    first, ids = archived_shop(closed=True, s3=s3, max_bytes=700)  # small objects
    assert await first.run() is Reason.SHARD_END
    objects = dict(s3.objects)
    assert len(objects) > 2
    # The predecessor wrote every object but never checkpointed: its successor reads the
    # whole shard again, cutting objects elsewhere (larger ones), and must adopt each.
    again, _ = archived_shop(closed=True, s3=s3, max_bytes=5000)
    again.kinesis = first.kinesis
    again.context = dataclasses.replace(again.context, make_reader=first.context.make_reader)
    assert await again.run() is Reason.SHARD_END
    assert s3.objects == objects, "nothing written again, nothing new"
    assert len(s3.puts) > len(objects), "the successor did try: each name was taken"
    assert sorted(archived_ids(s3)) == sorted(ids)
