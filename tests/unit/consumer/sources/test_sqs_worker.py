"""The SQS worker's batch handling on virtual time with a scripted queue: visibility kept while
a batch is in flight, deletion only of what is done, poison to the dead-letter table."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from consumer.config import Settings
from consumer.feeds import telemax
from consumer.pipeline import deadletter
from consumer.sources.sqs import SqsWorker
from consumer.testing import ScriptedWriter, client_error, reading
from kernel import backoff

pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
def same_jitter() -> None:
    """Backoff jitter from a seeded generator: nine throttled writes sum to the same
    seconds every run (unseeded, they summed to 3.3 s once: under the test's "> 4")."""
    backoff._SHARED_RNG.seed(10)


URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/readings"


class ScriptedQueue:
    """The SQS calls the worker makes after a receive, recorded."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.extended: list[tuple[float, int]] = []

    async def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        self.deleted += [entry["ReceiptHandle"] for entry in kwargs["Entries"]]
        return {"Successful": [{"Id": e["Id"]} for e in kwargs["Entries"]], "Failed": []}

    async def change_message_visibility_batch(self, **kwargs: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.extended.append((loop.time(), len(kwargs["Entries"])))
        return {"Successful": [], "Failed": []}


@dataclasses.dataclass
class FakeClients:
    sqs: Any
    dynamodb: Any = None


def message(n: int, body: bytes, receives: int = 1) -> dict[str, Any]:
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"r{n}",
        "Body": body.decode(),
        "Attributes": {"ApproximateReceiveCount": str(receives), "SentTimestamp": "1"},
    }


class Tables:
    """The records table (scripted) and the dead-letter table, each keyed as it is."""

    def __init__(self, records: ScriptedWriter) -> None:
        self.records = records
        self.letters = ScriptedWriter(key_names=deadletter.KEY_NAMES)

    async def __call__(self, table: str, items: Sequence[Any]) -> list[Any]:
        writer = self.letters if table.endswith("deadletter") else self.records
        return await writer(table, items)


def worker(queue: ScriptedQueue, writer: ScriptedWriter, visibility: float = 6.0) -> SqsWorker:
    settings = Settings(
        source="sqs", queue_url=URL, sqs_visibility_s=visibility, worker_id="w", metrics_port=0
    )
    return SqsWorker(
        settings,
        FakeClients(queue),  # type: ignore[arg-type]
        telemax.to_item,
        telemax.KEY_NAMES,
        writer=Tables(writer),
        clock=asyncio.get_running_loop().time,
    )


def letters_of(sqs: SqsWorker) -> ScriptedWriter:
    tables: Any = sqs.stage.store.dead_letters.wire
    return tables.writer.letters  # type: ignore[no-any-return]


def readings(count: int) -> Sequence[bytes]:
    return [orjson.dumps(reading(f"HW-{n}")) for n in range(count)]


async def test_a_slow_write_keeps_the_batch_invisible_and_then_deletes_it() -> None:
    queue = ScriptedQueue()
    throttled = client_error("ProvisionedThroughputExceededException")
    writer = ScriptedWriter(script=[throttled] * 9)  # several seconds of backoff
    started = asyncio.get_running_loop().time()
    await worker(queue, writer).handle([message(n, b) for n, b in enumerate(readings(3))])
    took = asyncio.get_running_loop().time() - started
    assert took > 4, "the write was slow"
    assert queue.extended and all(count == 3 for _, count in queue.extended)
    assert queue.extended[0][0] - started == pytest.approx(2.0, abs=0.01)  # a third of 6 s
    assert len(queue.extended) == int(took // 2)
    assert sorted(queue.deleted) == ["r0", "r1", "r2"]


async def test_bad_records_are_dead_lettered_and_their_messages_deleted() -> None:
    queue, writer = ScriptedQueue(), ScriptedWriter()
    sqs = worker(queue, writer)
    await sqs.handle([message(0, b"{oops"), message(1, readings(1)[0])])
    assert sorted(queue.deleted) == ["r0", "r1"]
    letters = list(letters_of(sqs).stored.values())
    assert [letter["reason"]["S"] for letter in letters] == ["not_json"]
    assert letters[0]["shardId"] == {"S": "sqs:readings"}


async def test_a_message_received_too_often_is_dead_lettered_not_looped() -> None:
    queue, writer = ScriptedQueue(), ScriptedWriter()
    poison = message(0, readings(1)[0], receives=10)
    sqs = worker(queue, writer)
    await sqs.handle([poison])
    assert queue.deleted == ["r0"]
    (letter,) = letters_of(sqs).stored.values()
    assert letter["reason"]["S"] == "redelivered_too_often"
    assert not [key for (table, key) in writer.stored if table == "TELEMAX"]


async def test_messages_not_done_are_left_to_come_back() -> None:
    queue = ScriptedQueue()
    denied = client_error("AccessDeniedException", "no")
    writer = ScriptedWriter(script=[denied])
    await worker(queue, writer).handle([message(n, b) for n, b in enumerate(readings(2))])
    assert queue.deleted == []
