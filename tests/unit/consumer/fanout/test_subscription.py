"""The fan-out subscription machine: where each subscription starts, when the next one is
opened, what is delivered — with a fake clock and scripted answers."""

from __future__ import annotations

import bisect
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.fanout.subscription import (
    MIN_SUBSCRIBE_INTERVAL_S,
    WATCHDOG_S,
    Cause,
    Deliver,
    Fatal,
    Gone,
    Phase,
    Reopen,
    ShardEnded,
    Subscription,
    starting_position,
)
from consumer.shard.discovery import Shard
from kernel.errors import IllegalTransition


def record(sequence: int) -> dict[str, Any]:
    return {"SequenceNumber": str(sequence), "Data": b"x", "PartitionKey": "p"}


def event(*sequences: int, continuation: int | None = None, behind: int = 0) -> dict[str, Any]:
    last = continuation if continuation is not None else (sequences[-1] if sequences else 0)
    return {
        "Records": [record(s) for s in sequences],
        "ContinuationSequenceNumber": str(last),
        "MillisBehindLatest": behind,
    }


def opened(checkpoint: str = "TRIM_HORIZON", now: float = 100.0) -> Subscription:
    machine = Subscription("shardId-0", checkpoint, rng=random.Random(7))
    machine.next(now)
    return machine


@pytest.mark.parametrize(
    ("checkpoint", "at", "expected"),
    [
        ("TRIM_HORIZON", False, {"Type": "TRIM_HORIZON"}),
        ("LATEST", False, {"Type": "LATEST"}),
        ("49", True, {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": "49"}),
        ("49", False, {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "49"}),
    ],
)
def test_starting_positions(checkpoint: str, at: bool, expected: dict[str, Any]) -> None:
    assert starting_position(checkpoint, None, at=at) == expected


def test_at_timestamp_needs_its_time_and_shard_end_has_nothing_to_read() -> None:
    when = datetime(2026, 12, 3, tzinfo=UTC)
    assert starting_position("AT_TIMESTAMP", when, at=False) == {
        "Type": "AT_TIMESTAMP",
        "Timestamp": when,
    }
    with pytest.raises(ValueError, match="timestamp"):
        starting_position("AT_TIMESTAMP", None, at=False)
    with pytest.raises(ValueError, match="SHARD_END"):
        starting_position("SHARD_END", None, at=False)


def test_the_first_subscription_starts_at_the_checkpoint_the_next_after_the_continuation() -> None:
    machine = Subscription("shardId-0", "40")
    first = machine.next(100.0)
    assert first.starting_position == {"Type": "AT_SEQUENCE_NUMBER", "SequenceNumber": "40"}
    assert (first.at, first.cause) == (100.0, None)
    assert machine.on_event(101.0, event(40, 41, 42)) == Deliver(
        [record(40), record(41), record(42)], 0, 0
    )
    assert machine.on_end(400.0) == Reopen(Cause.ENDED, "the subscription ended")
    again = machine.next(400.0)
    assert again.starting_position == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": "42"}
    assert (again.at, again.cause) == (400.0, Cause.ENDED)


def test_an_empty_event_moves_the_resume_point_to_its_continuation() -> None:
    machine = opened()
    assert machine.on_event(101.0, event(continuation=77, behind=5)) == Deliver([], 5, 0)
    assert machine.position == "77"
    machine.on_reset(102.0, "connection reset")
    assert machine.next(200.0).starting_position["SequenceNumber"] == "77"


def test_never_more_than_one_subscription_a_second() -> None:
    machine = opened(now=100.0)
    machine.on_end(100.2)  # ended at once
    assert machine.next(100.3).at == 100.0 + MIN_SUBSCRIBE_INTERVAL_S


def test_a_replayed_record_is_dropped_and_counted() -> None:
    machine = opened()
    machine.on_event(101.0, event(1, 2, 3))
    machine.on_end(102.0)
    machine.next(103.0)
    # a start the service did not know: kinesis-local replays from the trim horizon
    assert machine.on_event(104.0, event(1, 2, 3, 4)) == Deliver([record(4)], 0, 3)
    assert machine.on_event(105.0, event(2, 5)) == Deliver([record(5)], 0, 1)


@pytest.mark.parametrize(
    ("code", "cause", "base"),
    [
        ("ResourceInUseException", Cause.IN_USE, 1.0),
        ("LimitExceededException", Cause.THROTTLED, 1.0),
        ("InternalFailureException", Cause.FAILURE, 0.5),
        ("KMSThrottlingException", Cause.FAILURE, 0.5),
        ("HTTP503", Cause.FAILURE, 0.5),
    ],
)
def test_retried_errors_reopen_after_a_growing_backoff(
    code: str, cause: Cause, base: float
) -> None:
    machine = opened(now=100.0)
    waits = []
    now = 100.0
    for _ in range(6):
        outcome = machine.on_error(now, code, "busy")
        assert isinstance(outcome, Reopen) and outcome.cause is cause
        assert machine.phase is Phase.IDLE
        wait = machine.due_at - now
        waits.append(wait)
        assert wait >= 0 and machine.due_at >= now  # never before its own time
        now = machine.next(machine.due_at).at
    ceilings = [max(MIN_SUBSCRIBE_INTERVAL_S, min(10.0, base * 2**n)) for n in range(6)]
    assert all(w <= c + 1e-9 for w, c in zip(waits, ceilings, strict=True))
    assert max(waits) > base  # the ceiling grew: jitter alone would stay under ``base``


def test_an_event_resets_the_backoff() -> None:
    machine = opened(now=0.0)
    now = 0.0
    for _ in range(8):
        machine.on_error(now, "ResourceInUseException")
        now = machine.next(machine.due_at).at
    machine.on_event(now, event(1))
    machine.on_error(now, "ResourceInUseException")
    assert machine.due_at - now <= MIN_SUBSCRIBE_INTERVAL_S  # 1 s ceiling again, not 10


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("AccessDeniedException", "not authorized", "AccessDeniedException: not authorized"),
        ("InvalidArgumentException", "bad position", "InvalidArgumentException"),
        ("ResourceNotFoundException", "ConsumerARN arn:c not found", "(deregistered?)"),
    ],
)
def test_fatal_errors_stop_with_one_line(code: str, message: str, expected: str) -> None:
    machine = opened()
    outcome = machine.on_error(101.0, code, message)
    assert isinstance(outcome, Fatal)
    assert expected in outcome.message and "shardId-0" in outcome.message
    assert "\n" not in outcome.message
    assert machine.phase is Phase.FAILED
    with pytest.raises(IllegalTransition):
        machine.next(102.0)


def test_a_shard_that_is_not_there_is_gone() -> None:
    machine = opened()
    outcome = machine.on_error(101.0, "ResourceNotFoundException", "Shard shardId-0 not found")
    assert outcome == Gone("Shard shardId-0 not found")
    assert machine.phase is Phase.ENDED


def test_the_shard_end_names_the_children() -> None:
    machine = opened()
    machine.on_event(101.0, event(1))
    end = {
        "Records": [record(1), record(2)],
        "ContinuationSequenceNumber": None,
        "ChildShards": [
            {
                "ShardId": "shardId-1",
                "ParentShards": ["shardId-0"],
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"},
            },
            {
                "ShardId": "shardId-2",
                "ParentShards": ["shardId-0"],
                "HashKeyRange": {"StartingHashKey": "10", "EndingHashKey": "19"},
            },
        ],
    }
    outcome = machine.on_event(102.0, end)
    assert outcome == ShardEnded(
        [record(2)],
        (
            Shard("shardId-1", frozenset({"shardId-0"}), closed=False, hash_range=(0, 9)),
            Shard("shardId-2", frozenset({"shardId-0"}), closed=False, hash_range=(10, 19)),
        ),
    )
    assert machine.phase is Phase.ENDED and machine.silent_at() is None


def test_an_event_without_continuation_or_children_is_read_again() -> None:
    machine = opened()
    machine.on_event(101.0, event(1))
    outcome = machine.on_event(102.0, {"Records": [record(2)], "ChildShards": None})
    assert outcome == Reopen(Cause.FAILURE, "an event without a continuation")
    assert machine.next(110.0).starting_position["SequenceNumber"] == "1"
    assert machine.on_event(111.0, event(2)) == Deliver([record(2)], 0, 0)


def test_a_silent_subscription_is_opened_again() -> None:
    machine = opened(now=100.0)
    assert machine.silent_at() == 100.0 + WATCHDOG_S
    machine.on_event(120.0, event(1))
    assert machine.silent_at() == 120.0 + WATCHDOG_S
    outcome = machine.on_silent(155.0)
    assert outcome == Reopen(Cause.SILENT, "no event for 35 s")
    assert machine.silent_at() is None
    request = machine.next(155.0)
    assert request.cause is Cause.SILENT and request.at >= 155.0


def test_answers_out_of_turn_are_refused() -> None:
    machine = Subscription("shardId-0", "TRIM_HORIZON")
    with pytest.raises(IllegalTransition):
        machine.on_event(1.0, event(1))
    machine.next(1.0)
    with pytest.raises(IllegalTransition):
        machine.next(2.0)


@pytest.mark.parametrize("seed", range(20))
def test_every_record_is_delivered_once_in_order_whatever_ends_the_subscriptions(
    seed: int,
) -> None:
    """A scripted service over 300 records: each subscription serves events of a few records
    from its start, then ends, resets, goes silent, answers in use — or, for a start it does
    not know, replays from the first record (kinesis-local)."""
    rng = random.Random(seed)
    stream = list(range(1, 301))
    machine = Subscription("shardId-0", "TRIM_HORIZON", rng=random.Random(seed))
    delivered: list[int] = []
    now = 0.0
    for _ in range(10_000):
        if machine.finished():
            break
        request = machine.next(now)
        now = request.at
        kind, where = (
            request.starting_position["Type"],
            request.starting_position.get("SequenceNumber"),
        )
        if kind == "TRIM_HORIZON" or rng.random() < 0.1:
            start = 0
        else:
            start = bisect.bisect_right(stream, int(str(where)))  # after it
        if rng.random() < 0.15:
            machine.on_error(now + 0.05, "ResourceInUseException")
            now += 0.05
            continue
        at = start
        for _ in range(rng.randrange(0, 5)):
            batch = stream[at : at + rng.randrange(0, 6)]
            at += len(batch)
            now += 1.0
            if at >= len(stream):
                outcome = machine.on_event(
                    now,
                    {
                        "Records": [record(s) for s in batch],
                        "ContinuationSequenceNumber": None,
                        "ChildShards": [{"ShardId": "shardId-1", "ParentShards": ["shardId-0"]}],
                    },
                )
                assert isinstance(outcome, ShardEnded)
                delivered.extend(int(r["SequenceNumber"]) for r in outcome.records)
                break
            outcome = machine.on_event(now, event(*batch, continuation=stream[at - 1] if at else 0))
            assert isinstance(outcome, Deliver)
            delivered.extend(int(r["SequenceNumber"]) for r in outcome.records)
        if machine.finished():
            break
        ending = rng.choice(("end", "reset", "silent"))
        if ending == "end":
            machine.on_end(now)
        elif ending == "reset":
            machine.on_reset(now, "GOAWAY")
        else:
            now += WATCHDOG_S
            machine.on_silent(now)
    assert delivered == stream
