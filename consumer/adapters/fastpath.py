"""The lean path for the calls a worker makes most: GetRecords and BatchWriteItem (per
record), GetShardIterator (per shard taken), and the lease and membership tables' item calls
(a beat a second, a few per shard taken, a checkpoint per shard every 10 s).

Profiling showed about 70 % of the worker's CPU inside botocore's generic call path:
parameter validation, a serializer that walks the shape model, a parser that turns every
record's arrival time into a ``datetime``, and the event hooks: about 1.5 ms of CPU per call.
These calls' bodies are small JSON documents whose items are already in DynamoDB's wire
format, so this module builds them with orjson and sends them through
consumer.adapters.json_api, which signs them exactly as botocore's SigV4 signer would
(consumer.adapters.sigv4, checked byte for byte) with the session's own refreshable
credentials over small keep-alive HTTP/1.1 pools (consumer.adapters.http1) and maps every
failure to the exception botocore would raise (``ClientError`` with the same code and
status, ``ConnectionClosedError``, ``ReadTimeoutError``, ``EndpointConnectionError``), so the
retry, fencing, metric and dead-letter logic above cannot tell the two paths apart. The
control plane (ListShards, DescribeStream, tables) stays on aiobotocore.
``TELEMAX_FAST_PATH=false`` turns all of this off.
"""

from __future__ import annotations

import binascii
import dataclasses
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from consumer.adapters.json_api import (
    DYNAMODB,
    KINESIS,
    Credentials,
    JsonApi,
    json_default,
    retried_call,
)
from consumer.adapters.record_data import decode_each
from consumer.adapters.tls import client_context
from kernel.handlers import Entry, Item

CONTROL_POOL = 16  # connections for the lease and membership tables' item calls


class FastKinesis:
    def __init__(self, api: JsonApi) -> None:
        self._api = api

    async def get_records(self, iterator: str, limit: int) -> dict[str, Any]:
        """GetRecords with ``Data`` as bytes; arrival times stay epoch seconds (unused)."""
        body = orjson.dumps({"ShardIterator": iterator, "Limit": limit})
        answer: dict[str, Any] = await self._api.call("GetRecords", body)
        decode_each(answer.get("Records", ()))
        return answer

    async def get_shard_iterator(self, stream: str, shard_id: str, request: dict[str, Any]) -> str:
        """GetShardIterator; ``request`` as :func:`consumer.shard.reader.iterator_request`
        makes it (a ``Timestamp`` goes as epoch seconds, as the JSON protocol sends it)."""
        body: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id, **request}
        when = body.get("Timestamp")
        if isinstance(when, datetime):
            body["Timestamp"] = when.timestamp()
        answer = await self._api.call("GetShardIterator", orjson.dumps(body))
        iterator: str = answer["ShardIterator"]
        return iterator


# A request signed this long ago is signed again before it goes: its credentials, fetched
# then, are good for minutes more (a session refreshes them 10-15 minutes before they expire)
# and AWS takes a signature's time within 5 minutes of its own.
SIGNED_FOR_S = 60.0
# A BatchWriteItem body around items' JSON: what orjson writes of the same request
_PUTS = b':[{"PutRequest":{"Item":'
_PUT = b'}},{"PutRequest":{"Item":'
_END = b"}}]}}"


class FastDynamoDB:
    def __init__(self, api: JsonApi, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._api = api
        self._clock = clock
        self._names: dict[str, bytes] = {}

    def _name(self, table: str) -> bytes:
        """The table's name as a JSON string."""
        name = self._names.get(table)
        if name is None:
            name = self._names[table] = orjson.dumps(table)
        return name

    async def batch_write(self, table: str, items: Sequence[Entry]) -> list[Item]:
        """BatchWriteItem of ``items`` (an encoded one's JSON goes in as it is); returns the
        ones DynamoDB left unprocessed."""
        # (the operation named where it is called: the IAM test finds the calls by their names)
        answer = await self._api.call("BatchWriteItem", self._body(table, items))
        return self._unprocessed(table, answer)

    async def preparer(self, table: str) -> Callable[[Sequence[Entry]], PreparedWrite]:
        """What frames and signs a BatchWriteItem of ``items`` now, to send later: the sink
        prepares a burst of a batch's chunks at once (consumer.pipeline.sink). With the
        credentials of now: a request prepared with them goes as it is for
        ``SIGNED_FOR_S``, and is signed again after."""
        credentials = await self._api.credentials()
        fetched_at = self._clock()

        def prepare(items: Sequence[Entry]) -> PreparedWrite:
            body = self._body(table, items)
            request = self._api.framed("BatchWriteItem", body, credentials)
            return PreparedWrite(self, table, request, len(request) - len(body), fetched_at)

        return prepare

    def _body(self, table: str, items: Sequence[Entry]) -> bytes:
        encoded = [e[1] for e in items if type(e) is tuple]
        if len(encoded) == len(items):  # the body joined around them: 0.22 -> 0.06 µs an item
            return b"".join(
                (b'{"RequestItems":{', self._name(table), _PUTS, _PUT.join(encoded), _END)
            )
        fragment = orjson.Fragment
        return orjson.dumps(
            {
                "RequestItems": {
                    table: [
                        {"PutRequest": {"Item": fragment(e[1]) if type(e) is tuple else e}}
                        for e in items
                    ]
                }
            },
            default=json_default,
        )

    @staticmethod
    def _unprocessed(table: str, answer: Any) -> list[Item]:
        left = answer.get("UnprocessedItems", {}).get(table, ())
        return [request["PutRequest"]["Item"] for request in left]


class PreparedWrite:
    """A BatchWriteItem framed and signed ahead of its turn, sent once: its ``send`` answers
    as :meth:`FastDynamoDB.batch_write` of its items does.

    Why: on this VM the same instructions cost up to twice as much when the core has idled
    between them, and a worker paced by its table idles between answers. Framed and signed
    as each answer came (after an idle spell), a request cost 4.05 µs of CPU an item beside a
    server answering in 20 ms; a batch's requests framed and signed back to back, then sent
    as answers came, 3.12 (``python -m tests.bench.request_cost --latency 20``: "entries",
    "entries prepared"); in the worker 0.79-0.82x a record, paired (docs/performance-log.md)."""

    __slots__ = ("_body_at", "_dynamodb", "_request", "_signed_at", "_table")

    def __init__(
        self, dynamodb: FastDynamoDB, table: str, request: bytes, body_at: int, signed_at: float
    ) -> None:
        self._dynamodb = dynamodb
        self._table = table
        self._request = request
        self._body_at = body_at
        self._signed_at = signed_at

    @property
    def size(self) -> int:
        """The bytes it holds until sent."""
        return len(self._request)

    async def send(self) -> list[Item]:
        dynamodb, api = self._dynamodb, self._dynamodb._api
        if dynamodb._clock() - self._signed_at > SIGNED_FOR_S:  # (credentials may be due)
            answer = await api.call("BatchWriteItem", self._request[self._body_at :])
        else:
            answer = await api.send("BatchWriteItem", self._request)
        return dynamodb._unprocessed(self._table, answer)


# The item calls of the lease and membership tables (as named on the botocore client)
ITEM_CALLS = frozenset(
    {"get_item", "put_item", "update_item", "delete_item", "query", "scan", "batch_write_item"}
)
# orjson would write a datetime as ISO text: the JSON protocol wants epoch seconds
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME


def operation_of(method: str) -> str:
    """botocore's method name -> the API's operation name (describe_table -> DescribeTable)."""
    return "".join(part[:1].upper() + part[1:] for part in method.split("_"))


def binary_as_bytes(answer: Any) -> Any:
    """Binary attribute values of the items in an answer as bytes, as botocore gives them
    (the KCL's ``pendingCheckpointState`` is one)."""
    items = answer.get("Items") or []
    for key in ("Item", "Attributes"):
        if key in answer:
            items = [*items, answer[key]]
    for requests in (answer.get("UnprocessedItems") or {}).values():  # a batch write's
        items = [*items, *(r["PutRequest"]["Item"] for r in requests if "PutRequest" in r)]
    decode = binascii.a2b_base64
    for item in items:
        for value in item.values():
            if "B" in value:
                value["B"] = decode(value["B"])
            elif "BS" in value:
                value["BS"] = [decode(v) for v in value["BS"]]
    return answer


class JsonClient:
    """Operations of a JSON-protocol service called as on botocore's client: keyword
    arguments in, the answer as a dict out — DynamoDB's binary attributes as bytes, as
    botocore gives them (top-level attributes: the lease tables hold no maps or lists);
    timestamps stay epoch seconds. Throttling, 5xx and dropped connections are tried again
    as botocore's "standard" retry mode does (``attempts`` in all, full-jitter backoff from
    1 s, doubling), so a write whose answer was lost comes back as its retry's failed
    condition, as it does with botocore.

    ``calls``: the method names it takes (None: all); any other goes to ``generic``. The
    lease and membership tables' reads and conditional writes take it (a few per shard taken
    and one beat a second) at about a tenth of botocore's CPU (measured: tests/bench/idle.py,
    "CPU to take one more shard"), on a connection pool of their own: a beat never waits
    behind record writes.
    """

    def __init__(
        self,
        api: JsonApi,
        attempts: int,
        *,
        calls: frozenset[str] | None = None,
        generic: Any = None,
    ) -> None:
        self._api = api
        self._attempts = max(1, attempts)
        self._calls = calls
        self._generic = generic
        self._items = api.signing_name == "dynamodb"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._calls is not None and name not in self._calls:
            return getattr(self._generic, name)
        operation = operation_of(name)

        async def call(**kwargs: Any) -> Any:
            body = orjson.dumps(kwargs, default=json_default, option=_PASSTHROUGH)
            answer = await retried_call(lambda: self._api.call(operation, body), self._attempts)
            return binary_as_bytes(answer) if self._items else answer

        setattr(self, name, call)  # made once per operation
        return call


@dataclasses.dataclass(frozen=True)
class FastPath:
    kinesis: FastKinesis
    dynamodb: FastDynamoDB
    apis: tuple[JsonApi, ...]
    # (the generic DynamoDB client) -> its item calls on the lean path, for the lease tables
    items: Callable[[Any], JsonClient]
    # the same on the records' connections, for the insights' segments
    data_items: Callable[[Any], JsonClient]

    def close(self) -> None:
        for api in self.apis:
            api.close()


def create(
    credentials: Credentials,
    *,
    kinesis_endpoint: str,
    dynamodb_endpoint: str,
    region: str,
    pool: int,
    read_timeout: float,
    attempts: int = 3,
    ca_bundle: str | None = None,
) -> FastPath:
    """Lean clients for the endpoints and region the generic clients resolved, trusting
    the roots they trust (``ca_bundle``: AWS_CA_BUNDLE or the profile's)."""
    secure = any(url.startswith("https:") for url in (kinesis_endpoint, dynamodb_endpoint))
    tls = client_context(ca_bundle) if secure else None  # loading the roots costs ~20 ms

    def api(endpoint: str, service: tuple[str, str, str], size: int) -> JsonApi:
        return JsonApi(
            credentials,
            endpoint=endpoint,
            region=region,
            service=service,
            pool=size,
            read_timeout=read_timeout,
            ssl_context=tls,
        )

    kinesis = api(kinesis_endpoint, KINESIS, pool)
    dynamodb = api(dynamodb_endpoint, DYNAMODB, pool)
    control = api(dynamodb_endpoint, DYNAMODB, CONTROL_POOL)
    return FastPath(
        FastKinesis(kinesis),
        FastDynamoDB(dynamodb),
        (kinesis, dynamodb, control),
        lambda generic: JsonClient(control, attempts, calls=ITEM_CALLS, generic=generic),
        lambda generic: JsonClient(dynamodb, attempts, calls=ITEM_CALLS, generic=generic),
    )
