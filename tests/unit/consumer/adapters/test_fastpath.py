"""The lean path's pure parts: the lease tables' item calls retried as botocore's standard
mode retries them; BatchWriteItem bodies as orjson writes them; a prepared write the request
``batch_write`` sends (error mapping: test_json_api.py; the signature: test_sigv4.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from consumer.adapters.credentials import Frozen, StaticCredentials
from consumer.adapters.fastpath import ITEM_CALLS, SIGNED_FOR_S, FastDynamoDB, JsonClient
from consumer.adapters.json_api import DYNAMODB, JsonApi, error_from
from consumer.feeds import telemax
from consumer.testing import FakeClock, reading
from kernel.aws import error_code
from kernel.handlers import Entry
from tests.unit.consumer.adapters.local_http import Handler, serving

# -- JsonClient (the lease tables' item calls): botocore's "standard" retries -------------------


class ScriptedApi:
    """Answers (or raises) from a script, recording each operation and its loop time."""

    signing_name = "dynamodb"

    def __init__(self, *script: object) -> None:
        self.script = list(script)
        self.calls: list[tuple[float, str]] = []

    async def call(self, operation: str, body: bytes) -> object:
        self.calls.append((asyncio.get_running_loop().time(), operation))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def throttled() -> ClientError:
    return error_from(400, {}, b'{"__type":"x#ThrottlingException"}', "UpdateItem")


@pytest.mark.looptime
@pytest.mark.parametrize(
    ("script", "attempts", "outcome", "calls"),
    [
        pytest.param([{"Attributes": {}}], 3, "answer", 1, id="answered"),
        pytest.param(["throttle", "throttle", {"Attributes": {}}], 3, "answer", 3, id="retried"),
        pytest.param(["throttle"] * 3, 3, "ThrottlingException", 3, id="attempts-spent"),
        pytest.param(["throttle"], 1, "ThrottlingException", 1, id="one-attempt"),
        pytest.param(["closed", {"Attributes": {}}], 3, "answer", 2, id="connection-retried"),
        pytest.param(["condition"], 3, "ConditionalCheckFailedException", 1, id="lost-race-once"),
        pytest.param(["denied"], 3, "AccessDeniedException", 1, id="give-up-at-once"),
    ],
)
async def test_item_calls_retry_as_botocore_standard_mode(
    script: list[object], attempts: int, outcome: str, calls: int
) -> None:
    steps = {
        "throttle": throttled(),
        "closed": ConnectionClosedError(endpoint_url="http://x"),
        "condition": error_from(
            400, {}, b'{"__type":"x#ConditionalCheckFailedException"}', "UpdateItem"
        ),
        "denied": error_from(400, {}, b'{"__type":"x#AccessDeniedException"}', "UpdateItem"),
    }
    api = ScriptedApi(*(steps.get(s, s) if isinstance(s, str) else s for s in script))
    items = JsonClient(api, attempts, calls=ITEM_CALLS)  # type: ignore[arg-type]
    if outcome == "answer":
        assert await items.update_item(TableName="t") == {"Attributes": {}}
    else:
        with pytest.raises(ClientError) as failed:
            await items.update_item(TableName="t")
        assert error_code(failed.value) == outcome
    assert [op for _, op in api.calls] == ["UpdateItem"] * calls
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(api.calls)]
    assert all(0 <= gap <= 2**n for n, gap in enumerate(gaps)), "full jitter from 1 s"


class BodyApi:
    """Keeps each request's body; answers one item unprocessed (as DynamoDB writes it)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def call(self, operation: str, body: bytes) -> object:
        self.bodies.append(body)
        (request,) = orjson.loads(body)["RequestItems"].values()
        return {"UnprocessedItems": {"T": request[-1:]}}


async def test_encoded_entries_make_the_body_their_items_make() -> None:
    """Entries an encoder wrote go into BatchWriteItem's body as they are: byte for byte the
    body of the items they stand for, in any mix; what is left unprocessed comes back as
    items."""
    readings = [
        orjson.dumps(reading(f"HW-{n}", timestamp=f"2026-01-01T00:00:0{n}Z", Data1=f"L\x7f{n}"))
        for n in range(6)
    ]
    items = [telemax.to_item(data) for data in readings]
    entries: list[Entry] = [
        found if n % 3 and (found := telemax.encode(data)) else items[n]
        for n, data in enumerate(readings)
    ]
    assert sum(type(e) is tuple for e in entries) == 4
    api = BodyApi()
    dynamodb = FastDynamoDB(api)  # type: ignore[arg-type]
    assert await dynamodb.batch_write("T", items) == items[-1:]
    assert await dynamodb.batch_write("T", entries) == items[-1:]
    assert api.bodies[0] == api.bodies[1]


@pytest.mark.parametrize("count", [1, 2, 25])
@pytest.mark.parametrize("table", ["T", "telemax.prod-readings_2"])
async def test_a_request_of_encoded_entries_alone_is_the_body_their_items_make(
    count: int, table: str
) -> None:
    """A request whose entries were all written by an encoder is joined around their JSON:
    byte for byte the body orjson writes of their items."""
    readings = [
        orjson.dumps(reading(f"HW-{n}", timestamp=f"2026-01-01T00:00:{n:02d}Z"))
        for n in range(count)
    ]
    items = [telemax.to_item(data) for data in readings]
    entries: list[Entry] = [found for data in readings if (found := telemax.encode(data))]
    assert len(entries) == count
    api = BodyApi()
    dynamodb = FastDynamoDB(api)  # type: ignore[arg-type]
    await dynamodb.batch_write(table, items)
    await dynamodb.batch_write(table, entries)
    assert api.bodies[0] == api.bodies[1]


class Rotating:
    """Credentials that change at each fetch (AKID1, AKID2, ...), as a session's after a
    refresh."""

    def __init__(self) -> None:
        self.fetched = 0

    async def get_frozen_credentials(self) -> Frozen:
        self.fetched += 1
        return Frozen(f"AKID{self.fetched}", "secret", None)


def recording(requests: list[bytes], answer_body: bytes) -> Handler:
    """A handler that keeps each request whole and answers ``answer_body``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):  # (keep-alive, as AWS's)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            requests.append(head + await reader.readexactly(length))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer_body))
            writer.write(answer_body)

    return handle


def lean_dynamodb(url: str, credentials: Any, clock: Callable[[], float]) -> FastDynamoDB:
    api = JsonApi(
        credentials, endpoint=url, region="eu-west-1", service=DYNAMODB, pool=1, read_timeout=5
    )
    dates = iter(["20261206T120000Z", "20261206T120200Z", "20261206T120400Z"])
    api._signer._now = lambda: next(dates)  # type: ignore[method-assign]
    return FastDynamoDB(api, clock=clock)


READINGS = [orjson.dumps(reading(f"HW-{n}", f"2026-01-01T00:00:0{n}Z")) for n in range(5)]
ENTRIES: list[Entry] = [entry for entry in map(telemax.encode, READINGS) if entry is not None]
LEFT = telemax.to_item(orjson.dumps(reading("HW-4", "2026-01-01T00:00:04Z")))


async def test_a_prepared_write_is_the_request_batch_write_sends() -> None:
    """Framed and signed ahead, sent later: byte for byte what ``batch_write`` sends of the
    same entries signed at the same time; what is left unprocessed comes back as items."""
    requests: list[bytes] = []
    left = orjson.dumps({"UnprocessedItems": {"T": [{"PutRequest": {"Item": LEFT}}]}})
    async with serving(recording(requests, left)) as url:
        clock = FakeClock()
        dynamodb = lean_dynamodb(url, StaticCredentials(Frozen("AKID", "secret", None)), clock)
        prepared = (await dynamodb.preparer("T"))(ENTRIES)
        assert requests == []  # nothing goes until sent
        clock.advance(SIGNED_FOR_S)
        assert await prepared.send() == [LEFT]
        dynamodb._api._signer._now = lambda: "20261206T120000Z"  # type: ignore[method-assign]
        assert await dynamodb.batch_write("T", ENTRIES) == [LEFT]
        dynamodb._api.close()
    assert requests[0] == requests[1]
    assert b"X-Amz-Date: 20261206T120000Z" in requests[0]
    assert prepared.size == len(requests[0])


async def test_a_prepared_write_kept_too_long_is_signed_again_when_sent() -> None:
    """Past ``SIGNED_FOR_S`` its credentials may be due for refresh and its time too old for
    AWS: signed again, with the credentials and time of now, the same body."""
    requests: list[bytes] = []
    async with serving(recording(requests, b'{"UnprocessedItems":{}}')) as url:
        clock = FakeClock()
        credentials = Rotating()
        dynamodb = lean_dynamodb(url, credentials, clock)
        prepare = await dynamodb.preparer("T")
        kept = prepare(ENTRIES)
        clock.advance(SIGNED_FOR_S + 0.1)
        assert await kept.send() == []
        dynamodb._api._signer._now = lambda: "20261206T120000Z"  # type: ignore[method-assign]
        await (await dynamodb.preparer("T"))(ENTRIES[:2]).send()
        dynamodb._api.close()
    assert credentials.fetched == 3  # the preparer's, the resigning's, the second preparer's
    again, second = requests
    assert b"Credential=AKID2/20261206/" in again
    assert b"X-Amz-Date: 20261206T120200Z" in again  # its own time, not the first signing's
    items = [{"PutRequest": {"Item": telemax.to_item(data)}} for data in READINGS]
    assert again.endswith(orjson.dumps({"RequestItems": {"T": items}}))
    assert b"Credential=AKID3/" in second
