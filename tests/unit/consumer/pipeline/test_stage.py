"""The write stage: every destination of a batch, alerts only for stored items, refusals as
dead letters, and where each record stands when a destination fails."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable, Sequence

import pytest

from consumer.metrics import Metrics
from consumer.pipeline import deadletter
from consumer.pipeline.alerts import Alert, Alerter, compile_rules
from consumer.pipeline.convert import Converted
from consumer.pipeline.sink import Sink
from consumer.pipeline.stage import ALERT_NOT_SENT, Alerting, Progress, WriteStage
from consumer.pipeline.store import Store
from consumer.pipeline.table import BatchSink
from consumer.testing import ScriptedWriter, client_error, kinesis_record
from kernel.backoff import Backoff
from kernel.errors import DeadLetterRefused
from kernel.handlers import Item
from kernel.logs import get as get_logger

KEYS = ("k",)


class Topic:
    """An alert wire in memory: ``refuse`` names keys SNS would refuse, ``script`` errors."""

    destination = "alerts"
    api = "Publish"
    max_chunk = 10
    refusal_codes = frozenset({"InvalidParameter"})
    refusal_reason = "rejected_by_sns"

    def __init__(self, refuse: frozenset[str] = frozenset(), script: Sequence[Exception] = ()):
        self.sent: list[str] = []
        self._refuse = refuse
        self._script = list(script)

    def identity(self, entry: Alert) -> Hashable:
        return entry.id

    async def send(self, chunk: Sequence[Alert]) -> Sequence[Alert]:
        if self._script:
            raise self._script.pop(0)
        if any(a.key in self._refuse for a in chunk):
            raise client_error("InvalidParameter", "message too long", op="Publish")
        self.sent.extend(a.key for a in chunk)
        return []


def batch(totals: Sequence[int]) -> Converted:
    items: list[Item] = [
        {"k": {"S": f"o{n}"}, "total": {"N": str(t)}} for n, t in enumerate(totals)
    ]
    origins = [(kinesis_record({"n": n}, n + 1), 0) for n in range(len(totals))]
    return Converted(items, [], origins, last_sub=0)


def stage(topic: Topic, records: ScriptedWriter, letters: ScriptedWriter) -> WriteStage:
    metrics = Metrics("s")
    slots = asyncio.Semaphore(4)
    fast = {"backoff": lambda: Backoff(base=0.0001, cap=0.001)}
    store = Store(
        BatchSink(records, "T", KEYS, concurrency=slots, metrics=metrics, **fast),  # type: ignore[arg-type]
        BatchSink(letters, "D", deadletter.KEY_NAMES, concurrency=slots, metrics=metrics, **fast),  # type: ignore[arg-type]
        metrics,
    )
    rules = compile_rules({"large": "total >= `1000`"}, "test")
    sink = Sink(topic, concurrency=slots, metrics=metrics, **fast)  # type: ignore[arg-type]
    return WriteStage(store, Alerting(Alerter("orders", rules, KEYS), sink))


def writers(refuse_key: str | None = None) -> tuple[ScriptedWriter, ScriptedWriter]:
    records = ScriptedWriter(key_names=KEYS, refuse=lambda item: item["k"]["S"] == refuse_key)
    return records, ScriptedWriter(key_names=deadletter.KEY_NAMES)


async def write(stage: WriteStage, converted: Converted) -> Progress:
    progress = Progress(converted, list(converted.dead))
    await stage.write(progress, "s", "shard-1", get_logger())
    return progress


async def test_stored_items_that_match_alert_once_and_the_batch_is_done() -> None:
    topic = Topic()
    records, letters = writers()
    progress = await write(stage(topic, records, letters), batch([5, 1500, 20, 1000]))
    assert sorted(topic.sent) == ["o1", "o3"]
    assert progress.undone() == set() and progress.errors == []
    progress.raise_if_failed()


async def test_an_item_dynamodb_refuses_raises_no_alert() -> None:
    topic = Topic()
    records, letters = writers(refuse_key="o1")
    progress = await write(stage(topic, records, letters), batch([5, 1500, 2000]))
    assert topic.sent == ["o2"]
    assert [letter["reason"]["S"] for letter in letters.stored.values()] == ["rejected_by_dynamodb"]
    assert progress.undone() == set()


async def test_an_alert_sns_refuses_becomes_a_dead_letter_of_its_record() -> None:
    topic = Topic(refuse=frozenset({"o1"}))
    records, letters = writers()
    progress = await write(stage(topic, records, letters), batch([1500, 1500, 1500]))
    assert sorted(topic.sent) == ["o0", "o2"]
    (letter,) = letters.stored.values()
    assert letter["reason"]["S"] == ALERT_NOT_SENT
    assert letter["sequenceNumber"]["S"] == f"{2:056d}"  # the record of item o1
    assert ("T", ("o1",)) in records.stored  # the order itself is stored
    assert progress.undone() == set()


async def test_an_alert_destination_that_fails_leaves_its_records_undone() -> None:
    topic = Topic(script=[client_error("AuthorizationError", "not allowed", op="Publish")])
    records, letters = writers()
    progress = await write(stage(topic, records, letters), batch([5, 1500, 7]))
    assert len(records.stored) == 3
    assert progress.undone() == {f"{2:056d}"}  # stored, but its alert is not out
    with pytest.raises(Exception, match="AuthorizationError"):
        progress.raise_if_failed()


async def test_a_throttled_topic_is_retried_until_the_alert_is_out() -> None:
    topic = Topic(script=[client_error("Throttling", "slow down", op="Publish")] * 3)
    records, letters = writers()
    progress = await write(stage(topic, records, letters), batch([1500]))
    assert topic.sent == ["o0"] and progress.undone() == set()


async def test_a_dead_letter_table_refusing_stops_the_shard_before_its_checkpoint() -> None:
    topic = Topic()
    records = ScriptedWriter(key_names=KEYS)
    letters = ScriptedWriter(key_names=deadletter.KEY_NAMES, refuse=lambda item: True)
    converted = batch([5])
    converted.dead.append(
        deadletter.DeadLetter("s", "shard-1", f"{9:056d}", 0, "not_json", "", b"x")
    )
    progress = await write(stage(topic, records, letters), converted)
    assert progress.undone() == {f"{9:056d}"}
    with pytest.raises(DeadLetterRefused, match="dead-letter table refused 1 items"):
        progress.raise_if_failed()


@pytest.mark.parametrize("seed", range(20))
def test_every_item_stored_says_whether_the_stored_items_are_all_of_them(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(0, 6)
    progress = Progress(batch([1] * size), [])
    progress.items_durable([p for p in range(size) if rng.random() < 0.8])
    progress.refused = [p for p in range(size) if rng.random() < 0.1]
    everything = len(progress.stored_items()) == size
    assert progress.every_item_stored() is everything
