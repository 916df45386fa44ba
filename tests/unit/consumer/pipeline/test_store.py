"""The store stage: refused items become dead letters of the record they came from (by
position), and which records a partly stored batch leaves undone."""

from __future__ import annotations

import asyncio

import pytest

from consumer.metrics import Metrics
from consumer.pipeline import deadletter
from consumer.pipeline.convert import Converted, dead_letter
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.sink import Refused
from consumer.pipeline.stage import Progress
from consumer.pipeline.store import Store, letters_for
from consumer.pipeline.table import BatchSink
from consumer.testing import ScriptedWriter, kinesis_record
from kernel.handlers import Item

KEYS = ("k",)


def _item(n: int) -> Item:
    return {"k": {"S": f"key-{n}"}, "v": {"N": str(n)}}


def converted(subs: list[tuple[int, int]]) -> Converted:
    """One item per (record sequence, sub-sequence) pair, in that order."""
    origins = [(kinesis_record({"n": seq}, seq), sub) for seq, sub in subs]
    items = [_item(n) for n in range(len(subs))]
    return Converted(items, [], origins, last_sub=subs[-1][1] if subs else 0)


def test_a_refusal_becomes_the_dead_letter_of_its_own_user_record() -> None:
    batch = converted([(1, 0), (2, 0), (2, 1), (3, 0)])
    refused = [Refused(2, batch.items[2], "rejected_by_dynamodb", "too big")]
    (letter,) = letters_for(refused, batch, "s", "shard-1")
    assert (letter.sequence_number, letter.sub_sequence) == (f"{2:056d}", 1)
    assert (letter.stream, letter.shard_id, letter.reason) == (
        "s",
        "shard-1",
        "rejected_by_dynamodb",
    )


def _letter(seq: int) -> DeadLetter:
    return dead_letter("s", "shard-1", kinesis_record(b"x", seq), "not_json", "")


@pytest.mark.parametrize(
    ("durable", "refused", "stored", "expected"),
    [
        pytest.param([True, True, True], [], [True], set(), id="all-done"),
        pytest.param([True, False, True], [], [True], {2}, id="an-item-not-durable"),
        # a refused item is done once its own dead letter (the second letter) is stored
        pytest.param([True, False, True], [1], [True, True], set(), id="refused-and-lettered"),
        pytest.param([True, False, True], [1], [True, False], {2}, id="refused-not-lettered"),
        pytest.param([True, True, True], [], [False], {9}, id="a-dead-letter-not-stored"),
        pytest.param([False, False, False], [], [False], {1, 2, 9}, id="nothing-stored"),
    ],
)
def test_undone_records(
    durable: list[bool], refused: list[int], stored: list[bool], expected: set[int]
) -> None:
    batch = converted([(1, 0), (2, 0), (2, 1)])
    letters = [_letter(9)] + [_letter(2) for _ in refused]
    progress = Progress(batch, letters[:1], refused=refused)
    if refused:
        progress.add_letters(letters[1:])
    progress.items_durable([n for n, ok in enumerate(durable) if ok])
    progress.letters_stored(0)([n for n, ok in enumerate(stored) if ok])
    assert progress.undone() == {f"{seq:056d}" for seq in expected}


async def test_items_then_their_refusals_as_dead_letters() -> None:
    """Items to the records table, refusals as dead letters, counted by reason once stored."""
    records = ScriptedWriter(refuse=lambda item: item.get("v") == {"N": "1"}, key_names=KEYS)
    dead = ScriptedWriter(key_names=deadletter.KEY_NAMES)
    metrics = Metrics("s")
    slots = asyncio.Semaphore(2)
    store = Store(
        BatchSink(records, "T", KEYS, concurrency=slots, metrics=metrics),
        BatchSink(dead, "D", deadletter.KEY_NAMES, concurrency=slots, metrics=metrics),
        metrics,
    )
    batch = converted([(1, 0), (2, 0), (3, 0)])
    durable: list[int] = []
    letters, refused = await store.items(batch, "s", "shard-1", durable.extend)
    assert sorted(durable) == [0, 2] and refused == [1]
    assert [letter.sequence_number for letter in letters] == [f"{2:056d}"]
    assert await store.letters(letters) == []
    assert ("D", ("shard-1", letters[0].position)) in dead.stored
    sample = metrics.registry.get_sample_value
    assert sample("telemax_records_written_total", {"stream": "s"}) == 2
    labels = {"stream": "s", "reason": "rejected_by_dynamodb"}
    assert sample("telemax_records_dead_lettered_total", labels) == 1
