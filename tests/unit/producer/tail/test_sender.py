"""The tail's sender and the generator's shipper against a scripted PutRecords (no botocore
patching: an object with the client's method, as consumer.testing does for DynamoDB)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from consumer.testing import client_error
from kernel.kpl.decode import deaggregate
from kernel.kpl.encode import Entry
from producer.shipper import Shipper, Tally, put_records
from producer.tail.sender import AckingSender

pytestmark = pytest.mark.timeout(10)

Step = int | BaseException | None


class ScriptedKinesis:
    """``put_records`` follows ``script``: None accepts all, n fails the last n entries with
    ProvisionedThroughputExceededException, an exception is raised. Then it accepts."""

    def __init__(self, script: list[Step] | None = None) -> None:
        self.script = list(script or [])
        self.stored: list[tuple[bytes, str]] = []
        self.calls: list[int] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> Any:
        await self.gate.wait()
        self.calls.append(len(Records))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, BaseException):
            raise step
        failing = step or 0
        results: list[dict[str, str]] = []
        for n, record in enumerate(Records):
            if n >= len(Records) - failing:
                results.append(
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow"}
                )
            else:
                self.stored.append((record["Data"], record["PartitionKey"]))
                results.append({"SequenceNumber": str(len(self.stored)), "ShardId": "s-0"})
        return {"FailedRecordCount": failing, "Records": results}


def entries(count: int, key: str = "k") -> list[Entry]:
    return [Entry(b"%d" % n, key, context=n) for n in range(count)]


async def run_sender(
    kinesis: ScriptedKinesis, items: list[Entry], **options: Any
) -> tuple[AckingSender, list[object]]:
    acked: list[object] = []
    sender = AckingSender(
        cast(Any, kinesis), "s", lambda e: acked.append(e.context), backoff_cap_s=0.01, **options
    )
    running = asyncio.create_task(sender.run())
    for item in items:
        await sender.submit(item)
    await sender.close()
    await running
    return sender, acked


async def test_every_entry_is_acknowledged_once_in_batches_of_500() -> None:
    kinesis = ScriptedKinesis()
    sender, acked = await run_sender(kinesis, entries(1201), linger_s=0.01)
    assert acked == list(range(1201))
    assert [int(d) for d, _ in kinesis.stored] == list(range(1201))
    assert max(kinesis.calls) <= 500
    assert (sender.held, sender.tally.acknowledged) == (0, 1201)


async def test_failed_entries_are_retried_until_acknowledged() -> None:
    throttle = client_error("ProvisionedThroughputExceededException", status=400)
    kinesis = ScriptedKinesis([3, throttle, 2, client_error("InternalFailure", status=500)])
    sender, acked = await run_sender(kinesis, entries(10), linger_s=0.01)
    assert sorted(cast(list[int], acked)) == list(range(10))
    assert sorted(int(d) for d, _ in kinesis.stored) == list(range(10)), "each exactly once"
    assert sender.tally.throttled == 3 + 3 + 2


async def test_an_error_no_retry_fixes_stops_the_sender() -> None:
    kinesis = ScriptedKinesis([client_error("AccessDeniedException", status=400)])
    with pytest.raises(ClientError, match="AccessDenied"):
        await run_sender(kinesis, entries(3))


async def test_submit_waits_while_the_buffer_is_full() -> None:
    kinesis = ScriptedKinesis()
    kinesis.gate.clear()  # Kinesis does not answer: nothing is acknowledged
    sender = AckingSender(cast(Any, kinesis), "s", lambda e: None, max_records=5, linger_s=0)
    running = asyncio.create_task(sender.run())
    for item in entries(5):
        await sender.submit(item)
    blocked = asyncio.create_task(sender.submit(Entry(b"6", "k")))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "backpressure: the sixth entry waits"
    kinesis.gate.set()
    await asyncio.wait_for(blocked, 1)
    await sender.close()
    await running
    assert len(kinesis.stored) == 6


async def test_a_trickle_is_sent_after_the_linger() -> None:
    kinesis = ScriptedKinesis()
    acked: list[object] = []
    sender = AckingSender(cast(Any, kinesis), "s", lambda e: acked.append(e.context), linger_s=0.05)
    running = asyncio.create_task(sender.run())
    await sender.submit(Entry(b"1", "k", context=1))
    await asyncio.sleep(0.2)
    assert acked == [1], "sent without waiting for a full batch or close()"
    await sender.close()
    await running


async def test_put_records_splits_acknowledged_and_retry() -> None:
    kinesis = ScriptedKinesis([2])
    tally = Tally()
    done, retry = await put_records(cast(Any, kinesis), "s", entries(5), tally)
    assert [e.context for e in done] == [0, 1, 2]
    assert [e.context for e in retry] == [3, 4]
    assert (tally.acknowledged, tally.throttled, tally.kinesis_records) == (3, 2, 3)


async def test_shipper_aggregates_and_counts_user_records() -> None:
    kinesis = ScriptedKinesis()
    source = [Entry(b'{"n":%d}' % n, f"key-{n % 7}") for n in range(3000)]
    shipper = Shipper(cast(Any, kinesis), "s", concurrency=1, aggregate_bytes=10_000)
    tally = await shipper.ship(source)
    assert (tally.acknowledged, tally.sent, tally.failed) == (3000, 3000, 0)
    assert tally.kinesis_records == len(kinesis.stored) < 100
    unpacked = [
        (u.data, u.partition_key) for data, key in kinesis.stored for u in deaggregate(data, key)
    ]
    assert unpacked == [(e.data, e.partition_key) for e in source]


async def test_shipper_stops_when_told() -> None:
    kinesis = ScriptedKinesis()
    stop = asyncio.Event()
    shipper = Shipper(cast(Any, kinesis), "s", concurrency=1, rate=100)
    asyncio.get_running_loop().call_later(0.35, stop.set)
    tally = await shipper.ship(iter(entries(10_000)), stop)
    assert 30 <= tally.sent <= 40, tally  # 10 records every 100 ms, the first at once
    assert tally.acknowledged == tally.sent


async def test_shipper_counts_failures_after_the_budget() -> None:
    kinesis = ScriptedKinesis([1, 1, 1])
    shipper = Shipper(cast(Any, kinesis), "s", concurrency=1, attempts=3)
    tally = await shipper.ship(entries(4))
    assert (tally.acknowledged, tally.failed, tally.throttled) == (3, 1, 3)
