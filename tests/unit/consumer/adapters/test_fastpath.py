"""The lean path's pure parts: error mapping as botocore's; the lease tables' item calls
retried as botocore's standard mode retries them; BatchWriteItem bodies as orjson writes them
(the signature: test_sigv4.py)."""

from __future__ import annotations

import asyncio
import itertools

import orjson
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from consumer.adapters.fastpath import ITEM_CALLS, FastDynamoDB, JsonClient, error_from
from consumer.feeds import telemax
from consumer.testing import reading
from kernel.aws import classify, error_code
from kernel.errors import Action
from kernel.handlers import Entry


class Headers(dict[str, str]):
    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


@pytest.mark.parametrize(
    ("status", "body", "code", "action"),
    [
        (
            400,
            b'{"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
            b' "message": "slow down"}',
            "ProvisionedThroughputExceededException",
            Action.RETRY,
        ),
        (
            400,
            b'{"__type": "ExpiredIteratorException", "message": "old"}',
            "ExpiredIteratorException",
            Action.GIVE_UP,
        ),
        (
            400,
            b'{"__type": "com.amazon.coral.validate#ValidationException", "Message": "no"}',
            "ValidationException",
            Action.GIVE_UP,
        ),
        (
            400,
            b'{"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}',
            "ConditionalCheckFailedException",
            Action.FENCE,
        ),
        (500, b'{"__type": "InternalFailure"}', "InternalFailure", Action.RETRY),
        (500, b"<html>oops</html>", "500", Action.RETRY),
        (503, b"", "503", Action.RETRY),
        (
            400,
            b'{"__type": "AccessDeniedException:http://internal.amazon.com/"}',
            "AccessDeniedException",
            Action.GIVE_UP,
        ),
    ],
)
def test_error_answers_map_as_botocore_maps_them(
    status: int, body: bytes, code: str, action: Action
) -> None:
    error = error_from(status, Headers({"x-amzn-RequestId": "r-1"}), body, "BatchWriteItem")
    assert error_code(error) == code
    assert classify(error) is action
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.operation_name == "BatchWriteItem"


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
