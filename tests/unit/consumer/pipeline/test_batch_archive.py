"""The Lambda handler's archive against an in-memory S3 that lists as S3 does: whatever Lambda
does with a shard's batches — retries after a crash, bisected, from a partial failure's
record, crashes in the middle of archiving — every entry ends in exactly one object."""

from __future__ import annotations

import gzip
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from consumer.adapters.s3 import ObjectBody
from consumer.metrics import Metrics
from consumer.pipeline.archiver import ArchiveTarget
from consumer.pipeline.batch_archive import BatchArchive
from consumer.pipeline.pieces import Entry
from consumer.testing import client_error
from kernel.errors import ConfigError
from tests.unit.consumer.shard.test_shard_archive import MemoryS3

SHARD = "shardId-000000000007"


class ListingS3(MemoryS3):
    """Adds ListObjectsV2 (Prefix, StartAfter, MaxKeys) and, on demand, a crash."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.crash_at: int | None = None  # the call that fails, counted from now on

    def _call(self) -> None:
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            self.crash_at = None
            raise client_error("AccessDenied", "the invocation dies here", 403)

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self._call()
        return await super().put_object(**kwargs)

    async def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self._call()
        prefix, after = kwargs["Prefix"], kwargs.get("StartAfter", "")
        keys = sorted(k for k in self.objects if k.startswith(prefix) and k > after)
        return {"Contents": [{"Key": k} for k in keys[: kwargs["MaxKeys"]]]}

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        self._call()
        return {"Body": ObjectBody(self.objects[kwargs["Key"]][0])}

    def archived(self) -> Counter[bytes]:
        return Counter(
            line
            for body, _ in self.objects.values()
            for line in gzip.decompress(body).splitlines(keepends=True)
        )


def entry(seq: int, hour: str, letter: bool = False) -> Entry:
    line = orjson.dumps({"sequenceNumber": str(seq), "subSequenceNumber": 0, "letter": letter})
    return Entry((str(seq), 0), hour, line + b"\n", letter)


def shard_entries(rng: random.Random, count: int) -> list[list[Entry]]:
    """Per record, its entries: usually a stored item, now and then a dead letter or both
    (a refused item's letter), across a few hour changes."""
    hour, found = 10, []
    for seq in range(1, count + 1):
        if rng.random() < 0.03:
            hour += 1
        at = f"dt=2026-12-03/hour={hour:02d}"
        kinds = rng.choices([(False,), (True,), (False, True)], weights=[85, 10, 5])[0]
        found.append([entry(seq, at, letter) for letter in kinds])
    return found


@pytest.mark.parametrize("seed", range(12))
async def test_every_entry_lands_in_exactly_one_object_whatever_lambda_retries(seed: int) -> None:
    rng = random.Random(seed)
    records = shard_entries(rng, 300)
    s3 = ListingS3()
    archive = BatchArchive(s3, ArchiveTarget("bucket", "arch/", "telemax"), Metrics("s"))  # type: ignore[arg-type]
    checkpoint, size, invocations = 0, 40, 0
    while checkpoint < len(records):
        invocations += 1
        assert invocations < 2_000, "Lambda made no progress"
        batch = records[checkpoint : checkpoint + size]
        done = len(batch) if invocations > 1_000 else rng.randint(0, len(batch))
        outcome = "ok" if invocations > 1_000 else rng.choice(["ok", "partial", "crash"])
        if outcome == "crash" and rng.random() < 0.5:
            s3.crash_at = s3.calls + rng.randint(1, 4)  # dies in the middle of archiving
        try:
            await archive.write(SHARD, [e for entries in batch[:done] for e in entries])
        except Exception:
            outcome = "crash"
        s3.crash_at = None
        if outcome == "crash":  # Lambda retries the batch, bisected
            size = max(1, size // 2)
        elif outcome == "partial" or done < len(batch):  # retried from the first not done
            checkpoint += done
        else:
            checkpoint, size = checkpoint + len(batch), 40
    expected = Counter(e.line for entries in records for e in entries)
    assert s3.archived() == expected, "each entry in exactly one object, none missing"


async def test_a_retry_inside_an_object_writes_nothing_it_covers() -> None:
    records = shard_entries(random.Random(1), 30)
    entries = [e for record in records for e in record if not e.letter]
    s3 = ListingS3()
    archive = BatchArchive(s3, ArchiveTarget("bucket", "arch/", "telemax"), Metrics("s"))  # type: ignore[arg-type]
    await archive.write(SHARD, entries[:20])  # the invocation then died
    written = set(s3.objects)
    await archive.write(SHARD, entries[:10])  # the retry, bisected
    await archive.write(SHARD, entries[10:30])  # the next batch starts inside the object
    new = set(s3.objects) - written
    assert len(new) >= 1 and all("-from-" in key for key in new)
    assert s3.archived() == Counter(e.line for e in entries)


async def test_concurrent_batches_of_one_shard_stop_the_archive_before_anything_is_lost() -> None:
    """With several batches per shard in flight (ParallelizationFactor > 1) a batch holds
    only some partition keys of its range: an object spanning a record it does not hold must
    not be taken as holding it."""
    entries = [e for record in shard_entries(random.Random(2), 20) for e in record]
    records = [e for e in entries if not e.letter]
    s3 = ListingS3()
    archive = BatchArchive(s3, ArchiveTarget("bucket", "arch/", "telemax"), Metrics("s"))  # type: ignore[arg-type]
    await archive.write(SHARD, records[0::2])  # one lane: the even records
    with pytest.raises(ConfigError, match="ParallelizationFactor to 1"):
        await archive.write(SHARD, records[1::2])  # the other lane, inside the first's span
