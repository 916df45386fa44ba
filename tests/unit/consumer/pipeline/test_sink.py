"""The sink engine on the tables' wire: chunks, retries, bisection of refused items, concurrency,
versions of one key, encoded entries (the wire's own rules: test_table.py)."""

from __future__ import annotations

import asyncio
import copy
import gc
import random
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError

from consumer.metrics import Metrics
from consumer.pipeline.sink import PREPARED_AHEAD_BYTES, Refused
from consumer.pipeline.table import (
    BatchSink,
    table_identities,
)
from consumer.testing import ScriptedPreparer, ScriptedWriter, client_error
from kernel.backoff import Backoff
from kernel.handlers import Encoded, Entry, Item, as_item

TABLE = "TELEMAX"
KEYS = ("hardwareID", "Timestamp")


def item(n: int, value: str = "v", ts: str = "2026-01-01T00:00:00Z") -> Item:
    return {
        "hardwareID": {"S": f"HW-{n:04d}"},
        "Timestamp": {"S": ts},
        "Data1": {"S": value},
    }


def items(count: int) -> list[Item]:
    return [item(n) for n in range(count)]


def stored_ids(writer: ScriptedWriter) -> set[str]:
    return {key[1][0] for key in writer.stored}


@pytest.fixture(autouse=True, params=["plain", "prepared"])
def preparing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test of the engine twice: chunks sent as the writer is called, and chunks prepared
    ahead by the wire (as the lean path's table) — the same writer calls, script and outcome."""
    global PREPARING
    PREPARING = request.param == "prepared"
    yield
    PREPARING = False


PREPARING = False


def make_sink(
    writer: Any,
    *,
    concurrency: int = 4,
    errors: list[BaseException] | None = None,
    preparer: ScriptedPreparer | None = None,
) -> tuple[BatchSink, Metrics]:
    metrics = Metrics("s")
    if preparer is None and PREPARING:
        preparer = ScriptedPreparer(writer)
    sink = BatchSink(
        writer,
        TABLE,
        KEYS,
        concurrency=asyncio.Semaphore(concurrency),
        metrics=metrics,
        backoff=lambda: Backoff(base=0.0001, cap=0.001),
        on_error=(errors.append if errors is not None else lambda exc: None),
        preparer=preparer,
    )
    return sink, metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Durable:
    """What ``on_durable`` heard: the positions of each call, each position at most once."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.positions: set[int] = set()

    def __call__(self, positions: Sequence[int]) -> None:
        assert not self.positions & set(positions), "a position reported durable twice"
        assert len(set(positions)) == len(positions)
        self.calls.append(len(positions))
        self.positions.update(positions)

    @property
    def total(self) -> int:
        return len(self.positions)


# --- writing --------------------------------------------------------------------------------


async def test_all_items_stored_in_chunks_of_25() -> None:
    writer = ScriptedWriter()
    sink, metrics = make_sink(writer)
    durable = Durable()
    refused = await sink.write(items(60), durable)
    assert refused == []
    assert sorted(writer.calls) == [10, 25, 25]
    assert stored_ids(writer) == {f"HW-{n:04d}" for n in range(60)}
    assert durable.total == 60
    assert sample(metrics, "telemax_batch_write_seconds_count", {"table": TABLE}) == 3


async def test_nothing_to_write_makes_no_call() -> None:
    writer = ScriptedWriter()
    sink, _ = make_sink(writer)
    assert await sink.write([]) == []
    assert writer.calls == []


async def test_duplicates_merged_last_wins_and_count_as_durable() -> None:
    writer = ScriptedWriter()
    sink, _ = make_sink(writer)
    durable = Durable()
    batch = [*items(20), item(3, "second"), item(3, "third"), item(7, "again")]
    await sink.write(batch, durable)
    assert writer.calls == [20]
    assert writer.stored[(TABLE, ("HW-0003", "2026-01-01T00:00:00Z"))]["Data1"] == {"S": "third"}
    assert writer.stored[(TABLE, ("HW-0007", "2026-01-01T00:00:00Z"))]["Data1"] == {"S": "again"}
    assert durable.total == len(batch)


async def test_unprocessed_items_retried_until_stored() -> None:
    writer = ScriptedWriter(script=[3, 2])
    sink, metrics = make_sink(writer)
    durable = Durable()
    assert await sink.write(items(10), durable) == []
    assert writer.calls == [10, 3, 2]
    assert stored_ids(writer) == {f"HW-{n:04d}" for n in range(10)}
    assert durable.calls == [7, 1, 2]
    retried = sample(metrics, "telemax_unprocessed_items_retried_total", {"table": TABLE})
    assert retried == 5


async def test_nothing_processed_is_retried_too() -> None:
    writer = ScriptedWriter(script=[10, 10])
    sink, metrics = make_sink(writer)
    durable = Durable()
    await sink.write(items(10), durable)
    assert writer.calls == [10, 10, 10]
    assert durable.calls == [10]
    assert sample(metrics, "telemax_unprocessed_items_retried_total", {"table": TABLE}) == 20


@pytest.mark.parametrize(
    ("error", "throttle"),
    [
        pytest.param(client_error("ProvisionedThroughputExceededException"), True, id="pte"),
        pytest.param(client_error("ThrottlingException"), True, id="throttling"),
        pytest.param(client_error("RequestLimitExceeded"), True, id="request-limit"),
        pytest.param(client_error("InternalServerError", status=500), False, id="500"),
        pytest.param(client_error("SomethingNew", status=503), False, id="any-5xx"),
        pytest.param(ConnectionResetError("reset"), False, id="connection"),
        pytest.param(TimeoutError(), False, id="timeout"),
    ],
)
async def test_retryable_errors_are_retried(error: BaseException, throttle: bool) -> None:
    writer = ScriptedWriter(script=[error, error, None])
    errors: list[BaseException] = []
    sink, metrics = make_sink(writer, errors=errors)
    durable = Durable()
    assert await sink.write(items(5), durable) == []
    assert writer.calls == [5, 5, 5]
    assert len(writer.stored) == 5
    assert durable.total == 5
    assert errors == [error, error]
    throttles = sample(metrics, "telemax_throttles_total", {"api": "BatchWriteItem"})
    assert throttles == (2 if throttle else 0)
    code = error.response["Error"]["Code"] if isinstance(error, ClientError) else None
    label = code or type(error).__name__
    assert (
        sample(metrics, "telemax_aws_errors_total", {"api": "BatchWriteItem", "error": label}) == 2
    )


async def test_validation_exception_isolates_exactly_the_refused_items() -> None:
    bad = {"HW-0007", "HW-0019"}
    writer = ScriptedWriter(refuse=lambda i: i["hardwareID"]["S"] in bad)
    sink, _ = make_sink(writer)
    durable = Durable()
    refused = await sink.write(items(25), durable)
    assert sorted(as_item(r.entry)["hardwareID"]["S"] for r in refused) == sorted(bad)
    assert all(r.reason == "rejected_by_dynamodb" for r in refused)
    assert all(r.detail == "ValidationException: refused by the fake" for r in refused)
    assert stored_ids(writer) == {f"HW-{n:04d}" for n in range(25)} - bad
    assert durable.total == 25 - len(bad)


async def test_refused_items_across_several_chunks() -> None:
    bad = {"HW-0000", "HW-0030", "HW-0059"}
    writer = ScriptedWriter(refuse=lambda i: i["hardwareID"]["S"] in bad)
    sink, metrics = make_sink(writer)
    durable = Durable()
    batch = items(60)
    refused = await sink.write(batch, durable)
    assert isinstance(refused[0], Refused)
    refusals = sample(metrics, "telemax_destination_refused_total", {"destination": "table"})
    assert refusals == len(bad)
    assert sorted(as_item(r.entry)["hardwareID"]["S"] for r in refused) == sorted(bad)
    assert all(batch[r.position] is r.entry for r in refused)  # the caller's own objects
    # every position durable or refused, never both
    assert durable.positions | {r.position for r in refused} == set(range(len(batch)))
    assert not durable.positions & {r.position for r in refused}
    assert len(writer.stored) == 57
    assert durable.total == len(batch) - len(refused)


async def test_everything_refused() -> None:
    writer = ScriptedWriter(refuse=lambda i: True)
    sink, _ = make_sink(writer)
    durable = Durable()
    refused = await sink.write(items(4), durable)
    assert len(refused) == 4
    assert writer.stored == {}
    assert durable.total == 0


async def test_validation_after_partial_progress_bisects_only_the_rest() -> None:
    requests: list[list[str]] = []
    stored: set[str] = set()

    async def writer(table: str, batch: Sequence[Item]) -> list[Item]:
        ids = [i["hardwareID"]["S"] for i in batch]
        requests.append(ids)
        if len(requests) == 1:  # first answer: the last 4 left unprocessed
            stored.update(ids[:-4])
            return list(batch[-4:])
        if "HW-0008" in ids:
            raise client_error("ValidationException", "bad item", op="BatchWriteItem")
        stored.update(ids)
        return []

    sink, metrics = make_sink(writer)
    durable = Durable()
    refused = await sink.write(items(10), durable)
    assert [as_item(r.entry)["hardwareID"]["S"] for r in refused] == ["HW-0008"]
    assert refused[0].detail == "ValidationException: bad item"
    assert requests[1] == ["HW-0006", "HW-0007", "HW-0008", "HW-0009"]
    assert all(len(r) <= 4 for r in requests[1:])  # the stored six are never sent again
    assert stored == {f"HW-{n:04d}" for n in range(10)} - {"HW-0008"}
    assert durable.total == 9
    assert sample(metrics, "telemax_unprocessed_items_retried_total", {"table": TABLE}) == 4


@pytest.mark.parametrize("count", [5, 25], ids=["small", "one-chunk"])
async def test_access_denied_is_raised(count: int) -> None:
    error = client_error("AccessDeniedException", "no", op="BatchWriteItem")
    writer = ScriptedWriter(script=[error])
    sink, _ = make_sink(writer)
    with pytest.raises(ClientError) as caught:
        await sink.write(items(count))
    assert caught.value is error
    assert writer.calls == [count]  # not retried
    assert writer.stored == {}


async def test_access_denied_surfaces_from_many_chunks() -> None:
    error = client_error("AccessDeniedException", "no", op="BatchWriteItem")
    writer = ScriptedWriter(script=[error])
    sink, _ = make_sink(writer)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - inspected below
        await sink.write(items(60))
    raised = caught.value
    leaves = raised.exceptions if isinstance(raised, ExceptionGroup) else (raised,)
    assert error in leaves


@pytest.mark.parametrize("duplicates", [False, True])
async def test_item_missing_a_key_attribute_is_refused_not_raised(duplicates: bool) -> None:
    """Never sent: refused as ``missing_key`` whether the other keys are distinct or not."""
    keyless = {"hardwareID": {"S": "HW-X"}, "Data1": {"S": "no timestamp"}}
    sent: list[Item] = []

    def refuse(sent_item: Item) -> bool:  # as DynamoDB would
        sent.append(sent_item)
        return "Timestamp" not in sent_item

    writer = ScriptedWriter(refuse=refuse)
    sink, metrics = make_sink(writer)
    refused = await sink.write([*items(3), *items(duplicates), keyless])
    assert [r.entry for r in refused] == [keyless]
    assert [r.reason for r in refused] == ["missing_key"]
    assert keyless not in sent
    assert len(writer.stored) == 3
    refusals = sample(metrics, "telemax_destination_refused_total", {"destination": "table"})
    assert refusals == 1


@pytest.mark.parametrize("slots", [1, 3])
async def test_concurrency_semaphore_is_respected(slots: int) -> None:
    in_flight = 0
    peak = 0
    calls = 0

    async def writer(table: str, batch: Sequence[Item]) -> list[Item]:
        nonlocal in_flight, peak, calls
        calls += 1
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        in_flight -= 1
        return []

    sink, _ = make_sink(writer, concurrency=slots)
    assert await sink.write(items(250)) == []
    assert calls == 10
    assert peak == slots


async def test_semaphore_is_shared_between_sinks() -> None:
    in_flight = 0
    peak = 0

    async def writer(table: str, batch: Sequence[Entry]) -> list[Entry]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return []

    slots = asyncio.Semaphore(2)
    metrics = Metrics("s")
    sinks = [
        BatchSink(writer, name, KEYS, concurrency=slots, metrics=metrics) for name in ("a", "b")
    ]
    await asyncio.gather(*(sink.write(items(100)) for sink in sinks))
    assert peak == 2


@pytest.mark.parametrize("slots", [1, 4])
async def test_a_write_of_many_chunks_runs_no_more_tasks_than_slots(slots: int) -> None:
    # 400 chunks (a 10,000-record batch): a task a chunk, each waiting for a slot, was most
    # of the write stage's cost a chunk; the write's own tasks are at most its slots
    tasks_seen = 0
    calls = 0

    async def writer(table: str, batch: Sequence[Item]) -> list[Item]:
        nonlocal tasks_seen, calls
        calls += 1
        tasks_seen = max(tasks_seen, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return []

    sink, _ = make_sink(writer, concurrency=slots)
    durable = Durable()
    assert await sink.write(items(10_000), durable) == []
    assert calls == 400
    assert durable.total == 10_000
    assert tasks_seen <= slots + 1  # (the test's own task, which waits for the write)


async def test_a_batch_that_asked_first_is_written_first() -> None:
    # Its writers keep their slots from chunk to chunk: the slots do not go round every
    # batch in flight, which kept each batch (and the records it holds) in flight longer
    order: list[str] = []

    async def writer(table: str, batch: Sequence[Entry]) -> list[Entry]:
        order.append(table)
        await asyncio.sleep(0)
        return []

    slots = asyncio.Semaphore(2)
    metrics = Metrics("s")
    first, second = (
        BatchSink(writer, name, KEYS, concurrency=slots, metrics=metrics) for name in "AB"
    )
    await asyncio.gather(first.write(items(250)), second.write(items(250)))
    assert order == ["A"] * 10 + ["B"] * 10


@pytest.mark.parametrize("unprocessed", [False, True], ids=["throttled", "unprocessed"])
async def test_a_chunk_waiting_to_retry_holds_no_slot(unprocessed: bool) -> None:
    order: list[str] = []
    retried = False

    async def writer(table: str, batch: Sequence[Entry]) -> list[Entry]:
        nonlocal retried
        order.append(table)
        await asyncio.sleep(0)
        if table == "A" and not retried:
            retried = True
            if unprocessed:
                return list(batch[-2:])
            raise client_error("ThrottlingException")
        return []

    slots = asyncio.Semaphore(1)
    metrics = Metrics("s")
    first, second = (
        BatchSink(
            writer,
            name,
            KEYS,
            concurrency=slots,
            metrics=metrics,
            backoff=lambda: Backoff(base=0.001, cap=0.001),
        )
        for name in "AB"
    )
    await asyncio.gather(first.write(items(5)), second.write(items(5)))
    assert order == ["A", "B", "A"]


@pytest.mark.parametrize("slots", [1, 3])
async def test_a_cancelled_write_gives_every_slot_back(slots: int) -> None:
    sending = asyncio.Event()

    async def writer(table: str, batch: Sequence[Entry]) -> list[Entry]:
        sending.set()
        await asyncio.Event().wait()  # never answers
        return []

    semaphore = asyncio.Semaphore(slots)
    sink = BatchSink(writer, TABLE, KEYS, concurrency=semaphore, metrics=Metrics("s"))
    write = asyncio.create_task(sink.write(items(200)))
    await sending.wait()
    assert semaphore.locked()  # every slot taken by the write
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    for _ in range(slots):  # every slot free again, at once
        assert await asyncio.wait_for(semaphore.acquire(), 0.5)


async def test_refusals_come_back_in_position_order_whichever_chunk_ends_first() -> None:
    bad = {"HW-0003", "HW-0030", "HW-0055", "HW-0070"}
    chunk_sizes: list[int] = []

    async def writer(table: str, batch: Sequence[Entry]) -> list[Entry]:
        first = int(as_item(batch[0])["hardwareID"]["S"][3:])
        chunk_sizes.append(len(batch))
        await asyncio.sleep(0.001 * (4 - first // 25))  # the last chunk answers first
        if any(as_item(e)["hardwareID"]["S"] in bad for e in batch):
            raise client_error("ValidationException", "refused", op="BatchWriteItem")
        return []

    sink, _ = make_sink(writer, concurrency=4)
    batch = items(100)
    refused = await sink.write(batch)
    assert [r.position for r in refused] == [3, 30, 55, 70]
    assert all(batch[r.position] is r.entry for r in refused)


THROTTLE = client_error("ProvisionedThroughputExceededException")


@pytest.mark.parametrize(
    "retries",
    [
        pytest.param([THROTTLE, THROTTLE], id="throttled-twice"),
        pytest.param([5, 5], id="unprocessed-twice"),
        pytest.param([THROTTLE, 5], id="throttled-then-unprocessed"),
    ],
)
async def test_a_chunk_that_retries_keeps_one_backoff_and_others_make_none(
    retries: list[int | BaseException],
) -> None:
    made: list[Counting] = []

    class Counting(Backoff):
        def __init__(self) -> None:
            super().__init__(base=0.0001, cap=0.01)
            self.attempts: list[int] = []  # the attempt each delay was for

        def next_delay(self) -> float:
            self.attempts.append(self.attempt)
            return super().next_delay()

    def backoff() -> Backoff:
        made.append(Counting())
        return made[-1]

    writer = ScriptedWriter(script=[None, *retries, None])  # the second chunk retries twice
    metrics = Metrics("s")
    sink = BatchSink(
        writer, TABLE, KEYS, concurrency=asyncio.Semaphore(1), metrics=metrics, backoff=backoff
    )
    durable = Durable()
    assert await sink.write(items(50), durable) == []
    assert writer.calls[:2] == [25, 25] and len(writer.calls) == 4
    assert durable.total == 50
    # one backoff, for the chunk that retried, growing over its two retries
    assert len(made) == 1
    assert made[0].attempts == [0, 1]
    assert made[0].attempt == 0  # reset once the chunk was whole


# --- versions of one key: nothing merged away is lost (issue 10, case 5) ---------------------
# The sink sends only the last item of a key (BatchWriteItem refuses duplicate keys in one
# request). If DynamoDB refuses that item, the one before it must be written instead, and so
# on: every item given to ``write`` ends up written, merged away under a later item of its key
# that was written, or returned refused. ``on_durable`` counts each item once, when durable.


def version(value: str, n: int = 1) -> Item:
    return item(n, value)


def refusing(*values: str) -> ScriptedWriter:
    """A writer that refuses (ValidationException) any request holding one of ``values``."""
    return ScriptedWriter(refuse=lambda i: i["Data1"]["S"] in values)


KEY_1 = (TABLE, ("HW-0001", "2026-01-01T00:00:00Z"))


@pytest.mark.parametrize(
    ("versions", "refused_values", "stored", "expect_refused"),
    [
        pytest.param(["A", "B"], {"B"}, "A", ["B"], id="A-ok-B-refused"),
        pytest.param(["A", "B"], {"A", "B"}, None, ["A", "B"], id="both-refused"),
        pytest.param(["A", "B"], set(), "B", [], id="both-ok-A-merged"),
        pytest.param(["A", "B"], {"A"}, "B", [], id="A-refused-merged-under-B"),
        pytest.param(["A"], {"A"}, None, ["A"], id="single-refused"),
        pytest.param(["A", "B", "C"], set(), "C", [], id="three-ok"),
        pytest.param(["A", "B", "C"], {"C"}, "B", ["C"], id="three-last-refused"),
        pytest.param(["A", "B", "C"], {"B", "C"}, "A", ["B", "C"], id="three-first-ok"),
        pytest.param(["A", "B", "C"], {"A", "B", "C"}, None, ["A", "B", "C"], id="three-refused"),
        pytest.param(["A", "B", "C"], {"A", "C"}, "B", ["C"], id="three-middle-ok"),
    ],
)
async def test_versions_of_one_key_are_written_merged_or_refused(
    versions: list[str], refused_values: set[str], stored: str | None, expect_refused: list[str]
) -> None:
    writer = refusing(*refused_values)
    sink, _ = make_sink(writer)
    durable = Durable()
    others = [item(n) for n in range(2, 7)]  # other keys in the same requests: always stored
    batch = [version(v) for v in versions] + others
    refused = await sink.write(batch, durable)

    assert sorted(as_item(r.entry)["Data1"]["S"] for r in refused) == expect_refused
    assert all(batch[r.position] is r.entry for r in refused)  # the caller's own objects
    # every position durable or refused, never both
    assert durable.positions | {r.position for r in refused} == set(range(len(batch)))
    assert not durable.positions & {r.position for r in refused}
    assert all(r.reason == "rejected_by_dynamodb" for r in refused)
    if stored is None:
        assert KEY_1 not in writer.stored
    else:
        assert writer.stored[KEY_1]["Data1"] == {"S": stored}
    assert stored_ids(writer) >= {"HW-0002", "HW-0003", "HW-0004", "HW-0005", "HW-0006"}
    # Every item is either durable (counted once) or refused: nothing falls between.
    assert durable.total == len(batch) - len(refused)


async def test_earlier_versions_follow_refused_ones_across_chunks() -> None:
    """Sixty keys in three chunks, each with an old and a new version; the new version of
    every third key is refused: the old one is written in a further round."""
    old = [item(n, "old") for n in range(60)]
    new = [item(n, "bad" if n % 3 == 0 else "new") for n in range(60)]
    writer = refusing("bad")
    sink, _ = make_sink(writer)
    durable = Durable()
    batch = old + new
    refused = await sink.write(batch, durable)
    assert sorted(as_item(r.entry)["hardwareID"]["S"] for r in refused) == [
        f"HW-{n:04d}" for n in range(0, 60, 3)
    ]
    assert all(as_item(r.entry)["Data1"] == {"S": "bad"} for r in refused)
    assert {key[1][0]: i["Data1"]["S"] for key, i in writer.stored.items()} == {
        f"HW-{n:04d}": ("old" if n % 3 == 0 else "new") for n in range(60)
    }
    assert durable.total == len(batch) - len(refused)


async def test_earlier_version_not_counted_durable_when_its_write_fails() -> None:
    denied = client_error("AccessDeniedException", "no", op="BatchWriteItem")
    # Call 1: the survivor B, refused. Call 2: the further round with A, denied.
    writer = ScriptedWriter(script=[None, denied], refuse=lambda i: i["Data1"]["S"] == "B")
    sink, _ = make_sink(writer)
    durable = Durable()
    with pytest.raises(ClientError):
        await sink.write([version("A"), version("B")], durable)
    assert writer.calls == [1, 1]
    assert writer.stored == {}
    assert durable.total == 0


async def test_refused_after_unprocessed_returns_the_callers_item() -> None:
    """UnprocessedItems come back as new objects (botocore parses them from JSON): a later
    refusal must still name the item the caller gave, and counts stay exact."""
    calls: list[list[str]] = []

    async def writer(table: str, batch: Sequence[Item]) -> list[Item]:
        calls.append([i["Data1"]["S"] for i in batch])
        if len(calls) == 1:  # everything unprocessed, as copies
            return [copy.deepcopy(i) for i in batch]
        if any(i["Data1"]["S"] == "B" for i in batch):
            raise client_error("ValidationException", "bad item", op="BatchWriteItem")
        return []

    sink, _ = make_sink(writer)
    durable = Durable()
    batch = [version("A"), item(2, "x"), version("B")]
    refused = await sink.write(batch, durable)
    assert [r.entry for r in refused] == [batch[2]] and refused[0].entry is batch[2]
    assert refused[0].position == 2 and durable.positions == {0, 1}
    assert calls[-1] == ["A"]  # the earlier version written after the refusal
    assert durable.total == 2


@pytest.mark.parametrize(
    ("keys", "accepted", "expected"),
    [
        pytest.param("ab", {1}, [False, True], id="distinct-keys"),
        pytest.param("aa", {1}, [True, True], id="earlier-merged-under-stored-later"),
        pytest.param("aa", {0}, [True, False], id="later-refused-earlier-stored"),
        pytest.param("aa", set(), [False, False], id="none-stored"),
        pytest.param("aaa", {1}, [True, True, False], id="middle-stored"),
        pytest.param("abab", {0, 3}, [True, True, False, True], id="two-keys"),
    ],
)
async def test_durable_per_item_not_per_key(
    keys: str, accepted: set[int], expected: list[bool]
) -> None:
    """A position is durable when its item, or a later item of its key, was stored: a stored
    earlier item does not make a later one (refused) durable. DynamoDB here accepts the items
    at ``accepted`` and refuses the others."""
    batch = [item(ord(key), str(n)) for n, key in enumerate(keys)]
    writer = ScriptedWriter(refuse=lambda i: int(i["Data1"]["S"]) not in accepted)
    sink, _ = make_sink(writer)
    durable = Durable()
    refused = await sink.write(batch, durable)
    assert [n in durable.positions for n in range(len(keys))] == expected
    assert {r.position for r in refused} == set(range(len(keys))) - durable.positions


# --- encoded entries ------------------------------------------------------------------------


def encoded(entry: Item) -> Encoded:
    """The entry an encoder would make of ``entry``: its key, JSON, values and fields."""
    fields = tuple((name, kind) for name, value in entry.items() for kind in value)
    values = tuple(v.encode() for value in entry.values() for v in value.values())
    key = tuple(next(iter(entry[name].values())) for name in KEYS)
    return key, orjson.dumps(entry), values, fields


@pytest.mark.parametrize("seed", range(25))
async def test_encoded_entries_are_written_as_the_items_they_stand_for(seed: int) -> None:
    """A batch given as items, and the same batch with most of them encoded (mixed in any
    order): the same items stored, the same positions durable, the same refused — through
    duplicate keys (newest wins, across kinds), throttles, unprocessed items and bisection."""
    rng = random.Random(seed)
    batch = [item(rng.randrange(40), rng.choice("abcX")) for _ in range(rng.randrange(1, 160))]
    mixed: list[Entry] = [encoded(i) if rng.random() < 0.7 else i for i in batch]
    throttle = client_error("ProvisionedThroughputExceededException", op="BatchWriteItem")
    script = [rng.choice([None, None, 1, 7, throttle]) for _ in range(12)]
    outcomes = []
    for entries in (batch, mixed):
        writer = ScriptedWriter(script=list(script), refuse=lambda i: i["Data1"]["S"] == "X")
        sink, _ = make_sink(writer, concurrency=1)
        durable = Durable()
        refused = await sink.write(entries, durable)
        assert all(entries[r.position] is r.entry for r in refused)
        outcomes.append(
            (
                writer.stored,
                durable.positions,
                [(r.position, as_item(r.entry), r.reason) for r in refused],
            )
        )
    assert outcomes[0] == outcomes[1]
    assert table_identities(mixed, KEYS) == table_identities(batch, KEYS)


class _Entries(list[Item]):
    """A batch's entries that a weak reference can watch."""


@pytest.mark.parametrize("count", [10, 250])
async def test_a_write_leaves_no_cycle_holding_its_entries(count: int) -> None:
    # The worker collects its young objects rarely (consumer.cli.GC_THRESHOLDS): a reference
    # cycle through a write keeps its batch alive until then — a version whose writer was a
    # closure that started itself doubled the worker's memory (2026-12-05, reverted).
    async def writer(table: str, batch: Sequence[Entry]) -> list[Entry]:
        await asyncio.sleep(0)
        return []

    sink = BatchSink(writer, "T", KEYS, concurrency=asyncio.Semaphore(4), metrics=Metrics("s"))
    entries = _Entries(items(count))
    watched = weakref.ref(entries)
    gc.disable()
    try:
        assert await sink.write(entries) == []
        del entries
        assert watched() is None
    finally:
        gc.enable()


def bursts(events: list[tuple[str, int]]) -> list[int]:
    """How many chunks were prepared in each run of prepares between sends."""
    runs: list[int] = []
    before = "send"
    for kind, _ in events:
        if kind == "prepare":
            runs[-1:] = [runs[-1] + 1] if before == "prepare" else [*runs[-1:], 1]
        before = kind
    return runs


@pytest.mark.parametrize(
    ("size", "burst"), [(1000, 400), (PREPARED_AHEAD_BYTES // 4, 4), (PREPARED_AHEAD_BYTES, 1)]
)
async def test_a_wire_that_prepares_does_so_a_burst_of_chunks_at_a_time(
    size: int, burst: int
) -> None:
    # Prepared back to back rather than as each answer wakes the loop (on this VM the same
    # instructions cost up to twice as much after an idle spell): the whole batch, or as many
    # chunks as hold 4 MiB (what is prepared is held until sent)
    writer = ScriptedWriter()
    preparer = ScriptedPreparer(writer, size=size)
    sink, _ = make_sink(writer, concurrency=16, preparer=preparer)
    durable = Durable()
    assert await sink.write(items(10_000), durable) == []
    assert durable.total == 10_000 and len(writer.stored) == 10_000
    assert preparer.preparers == 1  # one preparer a round
    assert writer.calls == [25] * 400
    assert preparer.events.count(("prepare", 25)) == preparer.events.count(("send", 25)) == 400
    assert bursts(preparer.events) == [burst] * (400 // burst)
    waiting = peak = 0
    for kind, _ in preparer.events:
        waiting += 1 if kind == "prepare" else -1
        peak = max(peak, waiting)
    assert peak == burst


async def test_what_a_prepared_chunk_leaves_is_sent_again_unprepared() -> None:
    # A retry sends what is left (here 3 of 25), as the writer is called: a prepared chunk
    # goes once
    writer = ScriptedWriter(script=[3])
    preparer = ScriptedPreparer(writer)
    sink, _ = make_sink(writer, preparer=preparer)
    durable = Durable()
    assert await sink.write(items(25), durable) == []
    assert writer.calls == [25, 3]
    assert preparer.events == [("prepare", 25), ("send", 25)]
    assert durable.calls == [22, 3]


@pytest.mark.parametrize(
    "error",
    [client_error("ThrottlingException"), client_error("ValidationException")],
    ids=["retried", "bisected"],
)
async def test_a_prepared_chunk_that_fails_is_sent_again_as_the_writer_is_called(
    error: BaseException,
) -> None:
    writer = ScriptedWriter(script=[error])
    preparer = ScriptedPreparer(writer)
    sink, _ = make_sink(writer, preparer=preparer)
    durable = Durable()
    # a refusal of the request that the chunk's halves do not repeat: nothing to dead-letter
    assert await sink.write(items(20), durable) == []
    assert preparer.events == [("prepare", 20), ("send", 20)]
    assert writer.calls == ([20, 20] if "Throttling" in str(error) else [20, 10, 10])
    assert durable.total == 20


async def test_a_chunk_that_cannot_be_prepared_fails_the_write_and_frees_its_slots() -> None:
    # as when it cannot be sent: not the entries' fault, raised (the stage decides)
    writer = ScriptedWriter()
    made = 0

    async def preparer(table: str) -> Any:
        prepare = await ScriptedPreparer(writer)(table)

        def failing(entries: Sequence[Entry]) -> Any:
            nonlocal made
            made += 1
            if made == 3:
                raise TypeError("Type is not JSON serializable: Decimal")
            return prepare(entries)

        return failing

    slots = asyncio.Semaphore(4)
    sink = BatchSink(
        writer, TABLE, KEYS, concurrency=slots, metrics=Metrics("s"), preparer=preparer
    )
    with pytest.raises(TypeError, match="not JSON serializable"):
        await sink.write(items(200))
    assert slots._value == 4


async def test_a_round_whose_preparer_fails_sends_as_the_writer_is_called() -> None:
    # (a credentials refresh that failed, say): the chunks go as the writer is called, where
    # the same failure, if it lasts, is retried or raised as any other
    writer = ScriptedWriter()

    async def preparer(table: str) -> Any:
        raise client_error("ExpiredTokenException", op="AssumeRoleWithWebIdentity")

    sink = BatchSink(
        writer,
        TABLE,
        KEYS,
        concurrency=asyncio.Semaphore(4),
        metrics=Metrics("s"),
        preparer=preparer,
    )
    durable = Durable()
    assert await sink.write(items(60), durable) == []
    assert sorted(writer.calls) == [10, 25, 25]
    assert durable.total == 60
