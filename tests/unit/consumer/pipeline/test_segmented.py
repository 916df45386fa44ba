"""A shard's segment stream takes a batch's pieces made ahead of its write when the write
came out as they assumed, and makes them afresh when it did not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from consumer.feeds import FEEDS
from consumer.pipeline.archive import ArchiveBuffer
from consumer.pipeline.convert import convert
from consumer.pipeline.pieces import Piece
from consumer.pipeline.segmented import ShardSegments
from consumer.pipeline.stage import Progress
from consumer.testing import reading
from tests.unit.consumer.pipeline.test_entries import records


class Spy:
    """An ``entries_of`` that tells what each call saw, and answers a list of its own."""

    def __init__(self) -> None:
        self.seen: list[tuple[bool, int, int]] = []  # (every item stored, letters, refused)
        self.made: list[list[Piece]] = []

    def __call__(
        self, progress: Progress, records: Sequence[Any], stream: str, shard_id: str
    ) -> list[Piece]:
        self.seen.append(
            (progress.every_item_stored(), len(progress.letters), len(progress.refused))
        )
        self.made.append([])
        return self.made[-1]


def shard(spy: Spy) -> tuple[ShardSegments, list[Sequence[Piece]]]:
    segments = ShardSegments(ArchiveBuffer("shardId-0", 1 << 20, 60.0), [], spy)
    added: list[Sequence[Piece]] = []
    segments.add = added.append  # type: ignore[assignment,method-assign]
    return segments, added


def written(progress: Progress) -> None:
    """What the write stage does to a usual batch's progress: every item durable."""
    progress.items_durable(range(len(progress.converted.entries)))


def test_a_usual_batch_takes_the_pieces_made_ahead() -> None:
    spy = Spy()
    segments, added = shard(spy)
    batch = records(20, set())
    progress = Progress(convert(batch, FEEDS["telemax"].to_item, "s", "shardId-0", ()), [])
    ahead = segments.ahead(progress, batch, "s")
    assert ahead is not None and spy.seen == [(True, 0, 0)]  # as if every item were stored
    assert not any(progress.durable)  # the batch's own progress untouched
    written(progress)
    segments.add_batch(progress, batch, "s", ahead)
    assert spy.seen == [(True, 0, 0)]  # made once
    assert added == [ahead.pieces]


@pytest.mark.parametrize("refused", [[3], [0, 19]])
def test_a_batch_that_came_out_otherwise_is_made_again(refused: list[int]) -> None:
    # DynamoDB refused items: each a dead letter now, the pieces ahead no longer the batch's
    spy = Spy()
    segments, added = shard(spy)
    batch = records(20, set())
    progress = Progress(convert(batch, FEEDS["telemax"].to_item, "s", "shardId-0", ()), [])
    ahead = segments.ahead(progress, batch, "s")
    assert ahead is not None
    progress.items_durable([p for p in range(20) if p not in refused])
    progress.refused = list(refused)
    progress.add_letters([object()] * len(refused))  # type: ignore[list-item]
    segments.add_batch(progress, batch, "s", ahead)
    assert spy.seen == [(True, 0, 0), (False, len(refused), len(refused))]
    assert added == [spy.made[1]] and added[0] is not ahead.pieces


def test_a_batch_with_a_dead_letter_is_made_after_its_write_alone() -> None:
    spy = Spy()
    segments, added = shard(spy)
    batch = records(20, {4})
    converted = convert(batch, FEEDS["telemax"].to_item, "s", "shardId-0", ())
    progress = Progress(converted, list(converted.dead))
    assert segments.ahead(progress, batch, "s") is None and spy.seen == []
    progress.items_durable(range(len(converted.entries)))
    progress.stored = [True]
    segments.add_batch(progress, batch, "s", None)
    assert spy.seen == [(True, 1, 0)]
    assert added == [spy.made[0]]


def test_pieces_made_ahead_are_those_made_after_the_write() -> None:
    """With the archive's and the insights' real ``entries_of``: the same lines and facts."""
    from consumer.config import Settings
    from consumer.metrics import Metrics
    from consumer.pipeline.committers import segmented_for
    from kernel.aws import Clients

    clients: Any = Clients(kinesis=None, dynamodb=None, session=None, extra={"s3": None})  # type: ignore[arg-type]
    settings = Settings(stream="s", archive_bucket="b", insights=True)
    segmented = segmented_for(settings, clients, Metrics("s"))
    assert segmented is not None
    batch = [
        {
            "SequenceNumber": f"{1000 + n:056d}",
            "Data": orjson.dumps(reading(f"HW-{n % 7:06d}", f"2026-01-01T00:00:{n:02d}.5Z")),
            "PartitionKey": f"HW-{n % 7:06d}",
            "ApproximateArrivalTimestamp": 1_767_225_600.0 + n,
        }
        for n in range(40)
    ]
    keys = FEEDS["telemax"].key_names
    progress = Progress(convert(batch, FEEDS["telemax"].to_item, "s", "shardId-0", keys), [])
    ahead = segmented.for_shard("shardId-0", lambda: 0.0).ahead(progress, batch, "s")
    assert ahead is not None
    written(progress)
    after = segmented.entries_of(progress, batch, "s", "shardId-0")
    assert describe(ahead.pieces) == describe(after)


def describe(pieces: Sequence[Piece]) -> list[Any]:
    """What the pieces hold, comparable: their positions, lines and facts."""
    return [plain(piece) for piece in pieces]


def plain(value: Any) -> Any:
    if value is None or isinstance(value, bytes | str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if hasattr(value, "__slots__"):
        return (type(value).__name__, {n: plain(getattr(value, n)) for n in value.__slots__})
    if isinstance(value, Sequence):
        return [plain(item) for item in value]
    return repr(value)
