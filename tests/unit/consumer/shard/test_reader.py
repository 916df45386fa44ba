"""ShardReader on virtual time (looptime) against consumer.testing.FakeKinesis.

Every test runs on looptime's virtual clock: sleeps, backoffs and pacing take no real time,
and the fake records each call with the loop's time, so spacing is asserted exactly.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

import kernel.backoff
from consumer.metrics import Metrics
from consumer.shard.budget import RecordBudget
from consumer.shard.discovery import Shard
from consumer.shard.reader import (
    FIRST_LIMIT,
    MIN_CALL_INTERVAL_S,
    Fetched,
    ShardReader,
    botocore_get_records,
    next_call_at,
    pause_after,
)
from consumer.testing import (
    FROM_STREAM,
    GET_RECORDS,
    GET_SHARD_ITERATOR,
    FakeKinesis,
    client_error,
    kinesis_record,
)
from consumer.testing import get_records_answer as answer
from kernel.aws import error_code
from kernel.kpl import MAGIC

pytestmark = pytest.mark.looptime

STREAM = "s"
SHARD = "shardId-000000000000"
EPSILON = 1e-6
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def seq(n: int) -> str:
    return f"{n:056d}"


def rec(n: int, data: bytes = b"{}") -> dict[str, Any]:
    return kinesis_record(data, n)


def aggregated(n: int) -> dict[str, Any]:
    """A record whose data is KPL-aggregated (the reader looks only at the magic)."""
    return rec(n, MAGIC + b"\x0a\x01k" + bytes(16))


def numbers(fetched: Fetched) -> list[int]:
    return [int(r["SequenceNumber"]) for r in fetched.records]


def kinesis_holding(
    records: list[dict[str, Any]],
    *,
    closed: bool = False,
    child_shards: list[dict[str, Any]] | None = None,
) -> FakeKinesis:
    """A stream whose shard SHARD holds ``records``; a closed one ends with ``child_shards``."""
    kinesis = FakeKinesis(STREAM)
    shard = kinesis.add_shard(SHARD, closed=closed)
    shard.records.extend(records)
    shard.child_shards = child_shards
    return kinesis


def make_reader(
    kinesis: FakeKinesis,
    checkpoint: str = "TRIM_HORIZON",
    *,
    metrics: Metrics | None = None,
    get_records: Callable[[str, int], Awaitable[dict[str, Any]]] | None = None,
    **kw: Any,
) -> ShardReader:
    client = cast(Any, kinesis)
    return ShardReader(
        client,
        STREAM,
        SHARD,
        checkpoint,
        metrics=metrics or Metrics(STREAM),
        get_records=get_records or botocore_get_records(client),
        clock=asyncio.get_running_loop().time,
        **kw,
    )


async def fetch_n(reader: ShardReader, n: int) -> list[Fetched]:
    return [await asyncio.wait_for(reader.fetch(), 3600) for _ in range(n)]


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def throttles(metrics: Metrics, api: str = GET_RECORDS) -> float:
    return counter(metrics, "telemax_throttles_total", api=api)


def aws_errors(metrics: Metrics, error: str, api: str = GET_RECORDS) -> float:
    return counter(metrics, "telemax_aws_errors_total", api=api, error=error)


@pytest.fixture
def ceiling_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Full jitter without the jitter: every backoff waits its ceiling."""
    monkeypatch.setattr(kernel.backoff._SHARED_RNG, "uniform", lambda low, high: high)


# -- pacing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("empty_answers", "idle_poll_s", "pause"),
    [
        pytest.param(0, 0.8, 0.2, id="busy-at-the-api-limit"),
        pytest.param(1, 0.8, 0.4, id="first-empty-doubles"),
        pytest.param(2, 0.8, 0.8, id="second-reaches-the-cap"),
        pytest.param(3, 0.8, 0.8, id="stays-at-the-cap"),
        pytest.param(60, 0.8, 0.8, id="long-quiet-no-overflow"),
        pytest.param(2000, 0.8, 0.8, id="very-long-quiet"),
        pytest.param(1, 3.0, 0.4, id="long-cap-grows-slowly"),
        pytest.param(4, 3.0, 3.0, id="long-cap-reached"),
        pytest.param(1, 0.3, 0.3, id="cap-between-steps"),
        pytest.param(5, 0.05, 0.2, id="cap-below-the-api-limit"),
        pytest.param(-1, 0.8, 0.2, id="negative-is-busy"),
    ],
)
def test_pause_after(empty_answers: int, idle_poll_s: float, pause: float) -> None:
    assert pause_after(empty_answers, idle_poll_s) == pytest.approx(pause)


@pytest.mark.parametrize(
    ("now", "pause", "at"),
    [
        pytest.param(0.05, 0.2, 0.25, id="busy-exact"),
        pytest.param(0.0, 0.8, 0.8, id="idle-on-a-line"),
        pytest.param(0.05, 0.8, 0.8, id="idle-rounds-down-to-its-line"),
        pytest.param(0.6, 0.8, 1.4, id="float-sum-on-a-line-stays"),
        pytest.param(1000.37, 0.8, 1001.1, id="late-clock"),
        pytest.param(0.15, 0.4, 0.5, id="short-idle-pause"),
        pytest.param(0.25, 0.21, 0.45, id="never-sooner-than-the-api-limit"),
    ],
)
def test_next_call_at(now: float, pause: float, at: float) -> None:
    got = next_call_at(now, pause)
    assert got == pytest.approx(at)
    assert now + MIN_CALL_INTERVAL_S - EPSILON <= got <= now + pause + EPSILON


@pytest.mark.parametrize(
    ("steps", "idle_poll_s", "gaps"),
    [
        pytest.param([answer([rec(1)], behind=0)] * 4, 0.8, [0.2] * 3, id="records-flow"),
        pytest.param([answer([], behind=5000)] * 4, 0.8, [0.2] * 3, id="behind-no-records"),
        pytest.param([answer([], behind=0)] * 5, 0.8, [0.4, 0.8, 0.8, 0.8], id="caught-up"),
        pytest.param(
            [answer([], behind=0)] * 6, 3.0, [0.4, 0.8, 1.6, 3.0, 3.0], id="caught-up-long-idle"
        ),
        pytest.param([answer([], behind=None)] * 3, 0.8, [0.4, 0.8], id="no-millis-behind"),
        pytest.param(
            [answer([rec(1)], behind=0), answer([], behind=0), answer([], behind=9)] * 2,
            1.0,
            [0.2, 0.4, 0.2, 0.2, 0.4],
            id="mixed",
        ),
        pytest.param(
            [answer([], behind=0)] * 3 + [answer([rec(1)], behind=0)] + [answer([])] * 2,
            0.8,
            [0.4, 0.8, 0.8, 0.2, 0.4],
            id="records-reset-the-pause",
        ),
        # an idle interval configured below the API limit must not exceed 5 calls/s
        pytest.param([answer([], behind=0)] * 6, 0.05, [0.2] * 5, id="idle-below-the-limit"),
        pytest.param([answer([], behind=0)] * 6, 0.0001, [0.2] * 5, id="idle-tiny"),
    ],
)
async def test_spacing_between_calls(
    steps: list[dict[str, Any]], idle_poll_s: float, gaps: list[float]
) -> None:
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, *steps)
    await fetch_n(make_reader(kinesis, idle_poll_s=idle_poll_s), len(steps))
    assert kinesis.call_gaps() == pytest.approx(gaps)


@pytest.mark.parametrize("idle_poll_s", [0.0001, 0.05, 0.19, 0.2, 0.5])
@pytest.mark.parametrize("busy", [True, False])
async def test_never_more_than_five_calls_a_second(idle_poll_s: float, busy: bool) -> None:
    """Over a minute of a shard that alternates records, errors and idle answers."""
    rng = random.Random(7)
    steps: list[Any] = []
    for _ in range(150):
        kind = rng.choice(("records", "idle", "behind", "error") if busy else ("idle",))
        if kind == "error":
            steps.append(client_error("InternalFailure", status=500, op=GET_RECORDS))
        steps.append(
            answer([rec(1)] if kind == "records" else [], behind=9 if kind == "behind" else 0)
        )
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, *steps)
    reader = make_reader(kinesis, idle_poll_s=idle_poll_s, budget=RecordBudget(10**9))
    await fetch_n(reader, 150)
    times = kinesis.call_times()
    assert min(kinesis.call_gaps()) >= MIN_CALL_INTERVAL_S - EPSILON
    for n, start in enumerate(times):
        assert sum(1 for t in times[n:] if t < start + 1.0 - EPSILON) <= 5


@pytest.mark.parametrize(
    ("max_limit", "sizes", "limits"),
    [
        pytest.param(
            10_000,
            [1] * 10,
            [50, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000],
            id="answers-with-records-double-to-the-max",
        ),
        pytest.param(1200, [1] * 7, [50, 100, 200, 400, 800, 1200, 1200], id="capped-between"),
        pytest.param(30, [30, 30, 30], [30, 30, 30], id="max-below-first-limit"),
        pytest.param(
            10_000,
            [0, 0, 1, 0, 1, 1],
            [50, 50, 50, 100, 100, 200],
            id="only-busy-calls-grow",
        ),
        pytest.param(10_000, [50, 10_000, 7], [50, 10_000, 10_000], id="a-full-answer-jumps"),
        pytest.param(
            10_000, [1, 100, 3, 0], [50, 100, 10_000, 10_000], id="full-after-partial-jumps"
        ),
        pytest.param(10_000, [49, 98, 1], [50, 100, 200], id="one-short-of-full-only-doubles"),
    ],
)
async def test_limit_ramp(max_limit: int, sizes: list[int], limits: list[int]) -> None:
    """The first call asks for few; an answer as large as its call (a backlog) sends the next
    to the maximum; a smaller one with records doubles the limit; an empty one keeps it."""
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, *(answer([rec(n) for n in range(size)]) for size in sizes))
    reader = make_reader(kinesis, limit=max_limit, budget=RecordBudget(10**9))
    await fetch_n(reader, len(sizes))
    assert [call.args["Limit"] for call in kinesis.calls_of(GET_RECORDS)] == limits
    assert limits[0] == min(FIRST_LIMIT, max_limit)


async def test_a_full_answer_to_a_call_the_budget_cut_short_jumps_too() -> None:
    """Full means as many as the call asked for, which the budget may have cut below the
    limit: the backlog is there all the same."""
    budget = RecordBudget(10_000, least_grant=1)
    assert await budget.acquire(9_980) == 9_980  # 20 left for the first call
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, answer([rec(n) for n in range(20)]), answer([rec(99)]))
    reader = make_reader(kinesis, limit=5_000, budget=budget)
    await fetch_n(reader, 1)
    budget.release(10_000)  # the 9,980 and the 20 records fetched
    await fetch_n(reader, 1)
    assert [call.args["Limit"] for call in kinesis.calls_of(GET_RECORDS)] == [20, 5_000]


# -- throttling and errors ------------------------------------------------------------------


@pytest.mark.usefixtures("ceiling_backoff")
async def test_throttling_backs_off_exponentially_capped_and_never_gives_up() -> None:
    metrics = Metrics(STREAM)
    errors: list[BaseException] = []
    kinesis = kinesis_holding([rec(1)])
    kinesis.fail_next(GET_RECORDS, "ProvisionedThroughputExceededException", times=40)
    reader = make_reader(kinesis, metrics=metrics, on_error=errors.append)
    (fetched,) = await fetch_n(reader, 1)
    assert numbers(fetched) == [1], "still reading after 40 throttles"
    assert kinesis.call_gaps()[:9] == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10, 10])
    assert max(kinesis.call_gaps()) == pytest.approx(10.0), "the cap"
    assert len(kinesis.calls_of(GET_RECORDS)) == 41
    assert throttles(metrics) == 40
    assert aws_errors(metrics, "ProvisionedThroughputExceededException") == 40
    assert len(errors) == 40


async def test_backoff_is_jittered_below_its_ceiling() -> None:
    kinesis = kinesis_holding([rec(1)])
    kinesis.fail_next(GET_RECORDS, "ProvisionedThroughputExceededException", times=12)
    await fetch_n(make_reader(kinesis), 1)
    ceilings = [max(MIN_CALL_INTERVAL_S, min(10.0, 0.2 * 2**n)) for n in range(12)]
    gaps = kinesis.call_gaps()
    assert all(
        MIN_CALL_INTERVAL_S - EPSILON <= g <= c + EPSILON
        for g, c in zip(gaps, ceilings, strict=True)
    )


@pytest.mark.parametrize(
    ("op", "error", "label", "is_throttle"),
    [
        (GET_RECORDS, client_error("ProvisionedThroughputExceededException"), "", True),
        (GET_RECORDS, client_error("KMSThrottlingException"), "", True),
        (GET_RECORDS, client_error("InternalFailure", status=500), "", False),
        (GET_RECORDS, client_error("ServiceUnavailable", status=503), "", False),
        (GET_RECORDS, client_error("SomethingNew", status=502), "", False),
        (
            GET_RECORDS,
            EndpointConnectionError(endpoint_url="http://k"),
            "EndpointConnectionError",
            False,
        ),
        (
            GET_RECORDS,
            ConnectionClosedError(endpoint_url="http://k"),
            "ConnectionClosedError",
            False,
        ),
        (GET_RECORDS, ReadTimeoutError(endpoint_url="http://k"), "ReadTimeoutError", False),
        (GET_RECORDS, ConnectionResetError("reset"), "ConnectionResetError", False),
        (GET_RECORDS, TimeoutError(), "TimeoutError", False),
        (GET_SHARD_ITERATOR, client_error("LimitExceededException"), "", True),
        (GET_SHARD_ITERATOR, client_error("InternalFailure", status=500), "", False),
    ],
    ids=[
        "GetRecords-throttled",
        "GetRecords-KMS-throttled",
        "GetRecords-500",
        "GetRecords-503",
        "GetRecords-unknown-502",
        "GetRecords-endpoint-unreachable",
        "GetRecords-connection-closed",
        "GetRecords-read-timeout",
        "GetRecords-connection-reset",
        "GetRecords-timeout",
        "GetShardIterator-limit-exceeded",
        "GetShardIterator-500",
    ],
)
async def test_transient_errors_are_retried_and_counted(
    op: str, error: BaseException, label: str, is_throttle: bool
) -> None:
    """Two failures, then the records; ``label`` is the error label when not an AWS code."""
    metrics = Metrics(STREAM)
    errors: list[BaseException] = []
    kinesis = kinesis_holding([rec(1), rec(2)]).answer_next(op, error, error)
    budget = RecordBudget(1000)
    reader = make_reader(kinesis, metrics=metrics, budget=budget, on_error=errors.append)
    (fetched,) = await fetch_n(reader, 1)
    assert numbers(fetched) == [1, 2]
    assert errors == [error, error]
    assert aws_errors(metrics, label or error_code(error) or "?", api=op) == 2
    assert throttles(metrics, op) == (2 if is_throttle else 0)
    assert budget.in_use == 2, "only the delivered records stay charged"


@pytest.mark.parametrize(
    "error",
    [
        client_error("AccessDeniedException"),
        client_error("InvalidArgumentException"),
        client_error("KMSAccessDeniedException"),
        client_error("ValidationException"),
        ValueError("a bug"),
    ],
    ids=lambda e: e.response["Error"]["Code"] if hasattr(e, "response") else type(e).__name__,
)
@pytest.mark.parametrize("op", [GET_RECORDS, GET_SHARD_ITERATOR])
async def test_a_non_retryable_error_is_raised(op: str, error: Exception) -> None:
    kinesis = kinesis_holding([rec(1)]).answer_next(op, error)
    budget = RecordBudget(1000)
    with pytest.raises(type(error)) as raised:
        await make_reader(kinesis, budget=budget).fetch()
    assert raised.value is error
    assert len(kinesis.calls_of(op)) == 1, "not retried"
    assert budget.in_use == 0


# -- iterator expiry ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "before", "rebuilt", "after"),
    [
        pytest.param("TRIM_HORIZON", [], {"ShardIteratorType": "TRIM_HORIZON"}, [1, 2, 3], id="th"),
        pytest.param("LATEST", [], {"ShardIteratorType": "LATEST"}, [], id="latest"),
        pytest.param(
            "AT_TIMESTAMP",
            [],
            {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": WHEN},
            [1, 2, 3],
            id="at-timestamp",
        ),
        pytest.param(
            seq(1),
            [],
            {"ShardIteratorType": "AT_SEQUENCE_NUMBER", "StartingSequenceNumber": seq(1)},
            [1, 2, 3],
            id="checkpoint-nothing-delivered",
        ),
        pytest.param(
            "TRIM_HORIZON",
            [1, 2],
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq(2)},
            [3],
            id="th-after-delivery",
        ),
        pytest.param(
            seq(1),
            [2],
            {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": seq(2)},
            [3],
            id="checkpoint-after-delivery",
        ),
    ],
)
async def test_an_expired_iterator_is_rebuilt_after_the_last_delivered_record(
    checkpoint: str, before: list[int], rebuilt: dict[str, Any], after: list[int]
) -> None:
    metrics = Metrics(STREAM)
    kinesis = kinesis_holding([rec(1), rec(2), rec(3)])
    # a first read of the records in ``before`` (one answer per record), then expiry
    kinesis.answer_next(GET_RECORDS, *[answer([rec(n)], behind=5) for n in before])
    kinesis.fail_next(GET_RECORDS, "ExpiredIteratorException")
    reader = make_reader(kinesis, checkpoint, metrics=metrics, at_timestamp=WHEN)
    delivered = [numbers(f) for f in await fetch_n(reader, len(before) + 1)]
    assert delivered == [[n] for n in before] + [after]
    first, second = kinesis.iterator_requests()
    assert second == rebuilt
    if not before:
        assert first == rebuilt, "nothing delivered: the original position again"
    assert aws_errors(metrics, "ExpiredIteratorException") == 1


async def test_the_checkpoint_record_alone_then_expiry_resumes_after_it() -> None:
    kinesis = kinesis_holding([rec(1)]).answer_next(GET_RECORDS, FROM_STREAM)
    kinesis.fail_next(GET_RECORDS, "ExpiredIteratorException")
    reader = make_reader(kinesis, seq(1))
    assert [numbers(f) for f in await fetch_n(reader, 2)] == [[1], []]
    assert kinesis.iterator_requests()[1] == {
        "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "StartingSequenceNumber": seq(1),
    }


# -- resuming at a checkpoint ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "answers", "rebuilt_at"),
    [
        pytest.param(seq(5), [[rec(5), rec(6)]], False, id="delivered-then-after"),
        pytest.param(seq(5), [[], []], True, id="nothing-delivered-still-at"),
        pytest.param("TRIM_HORIZON", [[rec(5)]], False, id="sentinel"),
    ],
)
async def test_reads_at_the_checkpoint_until_something_is_delivered(
    checkpoint: str, answers: list[list[dict[str, Any]]], rebuilt_at: bool
) -> None:
    """The reader delivers what it reads at the checkpoint, the record there included (what of
    it was done is the convert stage's rule); an iterator rebuilt before anything was
    delivered starts at the checkpoint again, after a delivery after the last record."""
    metrics = Metrics(STREAM)
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, *(answer(records) for records in answers))
    kinesis.fail_next(GET_RECORDS, "ExpiredIteratorException")
    kinesis.answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it2"})
    kinesis.answer_next(GET_RECORDS, answer([]))
    reader = make_reader(kinesis, checkpoint, metrics=metrics)
    delivered = [numbers(f) for f in await fetch_n(reader, len(answers) + 1)]
    assert delivered == [[int(r["SequenceNumber"]) for r in a] for a in answers] + [[]]
    first, second = kinesis.iterator_requests()
    if checkpoint == "TRIM_HORIZON":
        assert first == {"ShardIteratorType": "TRIM_HORIZON"}
    else:
        assert first == {
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            "StartingSequenceNumber": seq(5),
        }
    kind = "AT_SEQUENCE_NUMBER" if rebuilt_at else "AFTER_SEQUENCE_NUMBER"
    if checkpoint != "TRIM_HORIZON" or not rebuilt_at:
        assert second["ShardIteratorType"] == kind
    received = counter(metrics, "telemax_records_received_total", stream=STREAM)
    assert received == sum(map(len, delivered))


# -- shard end ------------------------------------------------------------------------------


CHILDREN = [
    {"ShardId": "shardId-000000000002", "ParentShards": [SHARD]},
    {"ShardId": "shardId-000000000003", "ParentShards": [SHARD, "shardId-000000000001"]},
]


@pytest.mark.parametrize(
    ("records", "children", "expected"),
    [
        pytest.param(
            [rec(1), rec(2)],
            CHILDREN,
            (
                Shard("shardId-000000000002", frozenset({SHARD}), closed=False),
                Shard(
                    "shardId-000000000003", frozenset({SHARD, "shardId-000000000001"}), closed=False
                ),
            ),
            id="children-named",
        ),
        pytest.param([rec(1)], [], None, id="children-not-named"),
        pytest.param(
            [],
            [{**CHILDREN[0], "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "99"}}],
            (Shard("shardId-000000000002", frozenset({SHARD}), closed=False, hash_range=(0, 99)),),
            id="empty-with-hash-range",
        ),
    ],
)
async def test_shard_end(
    records: list[dict[str, Any]],
    children: list[dict[str, Any]],
    expected: tuple[Shard, ...] | None,
) -> None:
    kinesis = kinesis_holding(records, closed=True, child_shards=children)
    (fetched,) = await fetch_n(make_reader(kinesis, limit=10), 1)
    wanted = [int(r["SequenceNumber"]) for r in records]
    assert (numbers(fetched), fetched.ended, fetched.gone) == (wanted, True, False)
    assert fetched.children == expected


async def test_the_end_comes_with_the_last_records() -> None:
    kinesis = kinesis_holding([rec(n) for n in range(1, 6)], closed=True)
    fetched = await fetch_n(make_reader(kinesis, limit=2, budget=RecordBudget(100)), 3)
    assert [(numbers(f), f.ended) for f in fetched] == [
        ([1, 2], False),
        ([3, 4], False),
        ([5], True),
    ]


@pytest.mark.parametrize("op", [GET_SHARD_ITERATOR, GET_RECORDS])
async def test_a_shard_that_no_longer_exists_is_its_end(op: str) -> None:
    """Issue 10 case 3: a shard past the retention period (ResourceNotFoundException) is
    treated as ended, as the KCL's KinesisDataFetcher does, instead of raising forever."""
    metrics = Metrics(STREAM)
    errors: list[BaseException] = []
    budget = RecordBudget(1000)
    kinesis = kinesis_holding([rec(1)]).fail_next(op, "ResourceNotFoundException")
    reader = make_reader(kinesis, seq(1), metrics=metrics, budget=budget, on_error=errors.append)
    (fetched,) = await fetch_n(reader, 1)
    assert fetched == Fetched([], None, ended=True, children=None, gone=True)
    assert len(kinesis.calls_of(op)) == 1, "asked once, not retried"
    assert budget.in_use == 0
    assert aws_errors(metrics, "ResourceNotFoundException", api=op) == 1
    assert errors == [], "not reported as a retry"


async def test_a_shard_unknown_to_the_stream_is_gone() -> None:
    """The fake's own answer for a shard it does not have (not scripted)."""
    (fetched,) = await fetch_n(make_reader(FakeKinesis(STREAM)), 1)
    assert (fetched.gone, fetched.ended, fetched.records) == (True, True, [])


async def test_an_ordinary_end_is_not_gone() -> None:
    kinesis = kinesis_holding([], closed=True)
    (fetched,) = await fetch_n(make_reader(kinesis), 1)
    assert (fetched.ended, fetched.gone) == (True, False)


# -- the record budget ----------------------------------------------------------------------


async def test_records_stay_charged_until_released() -> None:
    budget = RecordBudget(100)
    kinesis = kinesis_holding([rec(n) for n in range(1, 4)])
    (fetched,) = await fetch_n(make_reader(kinesis, budget=budget, limit=50), 1)
    assert numbers(fetched) == [1, 2, 3]
    assert budget.in_use == 3
    budget.release(3)
    assert budget.in_use == 0


async def test_the_limit_asked_is_what_the_budget_grants() -> None:
    budget = RecordBudget(FIRST_LIMIT + 20)
    assert await budget.acquire(40) == 40
    kinesis = kinesis_holding([rec(1)])
    await fetch_n(make_reader(kinesis, budget=budget, limit=1000), 1)
    assert kinesis.calls_of(GET_RECORDS)[0].args["Limit"] == FIRST_LIMIT - 20


async def test_a_reader_waits_while_the_budget_is_spent() -> None:
    budget = RecordBudget(10)
    assert await budget.acquire(10) == 10
    kinesis = kinesis_holding([rec(1)])
    task = asyncio.ensure_future(make_reader(kinesis, budget=budget).fetch())
    await asyncio.sleep(60)
    assert not task.done() and kinesis.calls_of(GET_RECORDS) == []
    budget.release(4)
    fetched = await asyncio.wait_for(task, 1)
    assert numbers(fetched) == [1]
    assert kinesis.calls_of(GET_RECORDS)[0].args["Limit"] == 4
    assert kinesis.calls_of(GET_RECORDS)[0].at == pytest.approx(60)


# -- cancellation ---------------------------------------------------------------------------


class Blocking:
    """A get_records that never answers (a call in flight when the task is cancelled)."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, iterator: str, limit: int) -> dict[str, Any]:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize("where", ["in-flight", "backoff", "pacing", "budget"])
async def test_cancellation_is_raised_and_releases_the_budget(where: str) -> None:
    budget = RecordBudget(1000)
    kinesis = kinesis_holding([rec(1)])
    blocking = Blocking()
    get_records = None
    if where == "in-flight":
        get_records = blocking
    elif where == "backoff":
        kinesis.fail_next(GET_RECORDS, "ProvisionedThroughputExceededException", times=100)
    elif where == "budget":
        await budget.acquire(1000)
    reader = make_reader(kinesis, budget=budget, get_records=get_records, idle_poll_s=30)
    if where == "pacing":
        await fetch_n(reader, 1)  # delivers record 1; the next call is 0.2 s away
        budget.release(1)
    task = asyncio.ensure_future(reader.fetch())
    await asyncio.sleep(5 if where == "backoff" else 0.1)
    assert not task.done()
    calls_before = len(kinesis.calls_of(GET_RECORDS))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    await asyncio.sleep(60)
    assert len(kinesis.calls_of(GET_RECORDS)) == calls_before, "nothing after cancellation"
    assert budget.in_use == (1000 if where == "budget" else 0)


async def test_cancellation_is_not_swallowed_by_the_retry_loop() -> None:
    """A CancelledError raised by the call itself (not by task.cancel) is not retried."""
    kinesis = kinesis_holding([rec(1)]).answer_next(GET_RECORDS, asyncio.CancelledError())
    budget = RecordBudget(100)
    with pytest.raises(asyncio.CancelledError):
        await make_reader(kinesis, budget=budget).fetch()
    assert len(kinesis.calls_of(GET_RECORDS)) == 1
    assert budget.in_use == 0


# -- metrics --------------------------------------------------------------------------------


async def test_millis_behind_gauge_follows_the_answers() -> None:
    metrics = Metrics(STREAM)
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, answer([], behind=4200), answer([], behind=None), answer([]))
    reader = make_reader(kinesis, metrics=metrics)
    values = []
    for _ in range(3):
        fetched = await reader.fetch()
        gauge = counter(metrics, "telemax_millis_behind_latest", stream=STREAM, shard=SHARD)
        values.append((fetched.millis_behind, gauge))
    assert values == [(4200, 4200), (None, 4200), (0, 0)]


# -- fetch_next: empty answers stay inside the reader ----------------------------------------


async def test_fetch_next_returns_records_skipping_empty_answers() -> None:
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, *([answer([], behind=0)] * 5), answer([rec(7)], behind=0))
    fetched = await asyncio.wait_for(make_reader(kinesis).fetch_next(), 60)
    assert numbers(fetched) == [7]
    assert len(kinesis.call_times()) == 6


async def test_fetch_next_hands_back_an_empty_answer_once_due() -> None:
    """``due`` is asked after every answer: a deadline set while the reader waits counts."""
    kinesis = FakeKinesis(STREAM).answer_next(GET_SHARD_ITERATOR, {"ShardIterator": "it"})
    kinesis.answer_next(GET_RECORDS, *([answer([], behind=0)] * 20))
    loop = asyncio.get_running_loop()
    deadline: list[float] = []
    reader = make_reader(kinesis)
    pending = asyncio.ensure_future(reader.fetch_next(lambda: deadline[0] if deadline else None))
    await asyncio.sleep(3.0)
    assert not pending.done(), "no deadline: empty answers never come back"
    deadline.append(loop.time() + 2.0)
    fetched = await asyncio.wait_for(pending, 60)
    assert fetched.records == [] and not fetched.ended
    assert deadline[0] <= loop.time() <= deadline[0] + 0.8 + EPSILON


async def test_fetch_next_returns_the_end_of_a_closed_shard() -> None:
    kinesis = kinesis_holding([rec(1)], closed=True)
    reader = make_reader(kinesis)
    first = await asyncio.wait_for(reader.fetch_next(), 60)
    assert numbers(first) == [1]
    end = await asyncio.wait_for(reader.fetch_next(), 60)
    assert end.ended and end.records == []
