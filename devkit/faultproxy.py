"""A fault-injecting HTTP proxy for AWS APIs (Kinesis, DynamoDB, SNS, …), for tests and soaks.

Emulators never throttle, never return ``UnprocessedItems`` and never drop connections, so
tests put this proxy between a worker and an emulator. It binds 127.0.0.1, forwards every
request, and applies *rules* chosen per API operation (the ``X-Amz-Target`` header of the
JSON APIs, the ``Action`` field of the query APIs such as SNS):

- ``error``: answer ``status`` with the AWS error ``code`` instead of forwarding;
- ``unprocessed`` (BatchWriteItem): forward only some items, return the rest as
  ``UnprocessedItems`` (``fraction`` of them; 1.0 leaves the whole request unprocessed);
- ``delay``: wait ``delay_s`` and then forward (longer than the client's read timeout makes a
  read timeout);
- ``reset``: close the connection without answering;
- ``slow_answer``: forward at once, then wait ``delay_s`` before passing the answer on (the
  request is applied while the client still waits: a cancelled caller never learns it was);
- ``lose_answer``: forward, then close the connection instead of passing the answer on (the
  request was applied; the client sees a dropped connection and, botocore, sends it again);
- ``blackhole``: never answer, never forward (a network partition: the request hangs until
  the client gives up; install it for ``"*"`` and remove it to heal);
- ``absorb`` (BatchWriteItem only): answer at once that every item was written, without
  forwarding — nothing is stored: a table that keeps up with any load, for benchmarks that
  measure the writer's own cost (``make bench``'s ``busy``).

A rule applies with probability ``rate``, optionally only inside a time window, at most
``limit`` times, and only to requests whose body ``body`` accepts. Rules can be changed while
the proxy runs. ``injected`` counts what was done.

With ``count_tables=True`` the proxy also tallies the DynamoDB traffic it forwards per table
and operation (``table_tally()``): requests, and the items each carries — read items as the
answer reports them (``ScannedCount``, else ``Count``, for Scan/Query; 1 for a GetItem that
found an ``Item``; the ``Responses`` of a BatchGetItem), written items as the request names
them (1 for Put/Update/DeleteItem, whatever the answer: a failed condition is charged too;
each entry of a BatchWriteItem or TransactWriteItems).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import random
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from devkit.local import LOCALHOST, free_port

KINDS = (
    "error",
    "unprocessed",
    "delay",
    "slow_answer",
    "reset",
    "lose_answer",
    "blackhole",
    "absorb",
)
NOTHING_UNPROCESSED = b'{"UnprocessedItems":{}}'  # BatchWriteItem's answer: every item written
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
SINGLE_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem"})
PAGED_READS = frozenset({"Scan", "Query"})

TableOperation = tuple[str, str]  # (table name, DynamoDB operation)


@dataclasses.dataclass
class TableTally:
    """DynamoDB traffic by (table, operation): requests forwarded, items read or written, the
    part of the items read with ``ConsistentRead`` (charged twice an eventual read), and the
    requests DynamoDB refused (any answer but 200: failed conditions, throttles, errors)."""

    requests: Counter[TableOperation] = dataclasses.field(default_factory=Counter)
    items: Counter[TableOperation] = dataclasses.field(default_factory=Counter)
    consistent_items: Counter[TableOperation] = dataclasses.field(default_factory=Counter)
    refused: Counter[TableOperation] = dataclasses.field(default_factory=Counter)

    def copy(self) -> TableTally:
        return TableTally(
            Counter(self.requests),
            Counter(self.items),
            Counter(self.consistent_items),
            Counter(self.refused),
        )

    def since(self, earlier: TableTally) -> TableTally:
        """What was added after ``earlier`` (a copy taken before)."""
        return TableTally(
            self.requests - earlier.requests,
            self.items - earlier.items,
            self.consistent_items - earlier.consistent_items,
            self.refused - earlier.refused,
        )

    def add(self, operation: str, items: dict[str, int], consistent: bool, refused: bool) -> None:
        for table, count in items.items():
            self.requests[(table, operation)] += 1
            self.items[(table, operation)] += count
            if consistent:
                self.consistent_items[(table, operation)] += count
            if refused:
                self.refused[(table, operation)] += 1


def items_by_table(
    operation: str, request: dict[str, Any], status: int, answer: bytes
) -> dict[str, int]:
    """{table: items read or written} for one forwarded DynamoDB request (see the module doc);
    every table the request names appears, with 0 for control-plane calls and failed reads."""
    ok = status == 200
    if operation == "BatchWriteItem":
        return {table: len(entries) for table, entries in request["RequestItems"].items()}
    if operation == "BatchGetItem":
        found: dict[str, Any] = orjson.loads(answer).get("Responses", {}) if ok else {}
        return {table: len(found.get(table, ())) for table in request["RequestItems"]}
    if operation in ("TransactWriteItems", "TransactGetItems"):
        counted: Counter[str] = Counter()
        for entry in request["TransactItems"]:
            for action in entry.values():  # {"Put": {...}}, {"Get": {...}}, …
                written_or_read = ok or operation == "TransactWriteItems"
                counted[action["TableName"]] += 1 if written_or_read else 0
        return dict(counted)
    table = request.get("TableName")
    if not isinstance(table, str):
        return {}
    if operation in SINGLE_WRITES:
        return {table: 1}
    if not ok:
        return {table: 0}
    if operation in PAGED_READS:
        page = orjson.loads(answer)
        return {table: int(page.get("ScannedCount", page.get("Count", 0)))}
    if operation == "GetItem":
        return {table: 1 if "Item" in orjson.loads(answer) else 0}
    return {table: 0}


@dataclasses.dataclass
class Rule:
    operation: str  # e.g. "BatchWriteItem", "GetRecords"; "*" matches every operation
    kind: str  # one of KINDS
    rate: float = 1.0
    code: str = "ProvisionedThroughputExceededException"
    status: int = 400
    fraction: float = 0.5
    delay_s: float = 0.0
    after_s: float = 0.0  # active from this many seconds after the rule was installed …
    until_s: float | None = None  # … until this many (None: for ever)
    limit: int | None = None  # at most this many injections
    body: Callable[[bytes], bool] | None = None  # only requests whose body this accepts
    used: int = 0
    installed_at: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {KINDS}")
        if self.kind == "absorb" and self.operation != "BatchWriteItem":
            raise ValueError("only a BatchWriteItem can be absorbed")

    def applies(self, operation: str, body: bytes, now: float, rng: random.Random) -> bool:
        if self.operation not in ("*", operation):
            return False
        if self.body is not None and not self.body(body):
            return False
        age = now - self.installed_at
        if age < self.after_s or (self.until_s is not None and age >= self.until_s):
            return False
        if self.limit is not None and self.used >= self.limit:
            return False
        return rng.random() < self.rate


class FaultProxy:
    """Start with ``with FaultProxy(upstream) as proxy:``; point the client at ``endpoint``."""

    def __init__(
        self,
        upstream: str,
        rules: Sequence[Rule] = (),
        *,
        seed: int | None = None,
        count_tables: bool = False,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.injected: Counter[tuple[str, str]] = Counter()  # (operation, kind) -> count
        self.forwarded: Counter[str] = Counter()
        self.table_errors = 0  # answers the table tally could not read (never breaks a request)
        self._count_tables = count_tables
        self._tables = TableTally()
        self._rules = [dataclasses.replace(rule, used=0) for rule in rules]
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def set_rules(self, rules: Sequence[Rule]) -> None:
        """Install copies of ``rules`` (so one list can serve several proxies or tests)."""
        now = time.monotonic()
        fresh = [dataclasses.replace(rule, used=0, installed_at=now) for rule in rules]
        with self._lock:
            self._rules = fresh

    def table_tally(self) -> TableTally:
        """A copy of the DynamoDB traffic by table so far (empty unless ``count_tables``)."""
        with self._lock:
            return self._tables.copy()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)

    def _pick(self, operation: str, body: bytes) -> Rule | None:
        now = time.monotonic()
        with self._lock:
            for rule in self._rules:
                if rule.applies(operation, body, now, self._rng):
                    rule.used += 1
                    self.injected[(operation, rule.kind)] += 1
                    return rule
        return None

    async def _while_installed(self, rule: Rule) -> None:
        while not self._stopped.is_set():
            with self._lock:
                if not any(r.installed_at == rule.installed_at for r in self._rules):
                    return
            await asyncio.sleep(0.05)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        stopped = asyncio.Event()
        self._loop.call_soon(self._watch_stop, stopped)
        connector = aiohttp.TCPConnector(limit=256)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            self._session = session
            app = web.Application(client_max_size=32 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, LOCALHOST, self.port).start()
            self._ready.set()
            try:
                await stopped.wait()
            finally:
                await runner.cleanup()

    def _watch_stop(self, stopped: asyncio.Event) -> None:
        if self._stopped.is_set():
            stopped.set()
        else:
            self._loop.call_later(0.05, self._watch_stop, stopped)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = operation_of(request.headers, body)
        rule = self._pick(operation, body)
        if rule is None:
            return await self._forward(request, body, operation)
        if rule.kind == "lose_answer":
            await self._forward(request, body, operation)
        if rule.kind in ("reset", "lose_answer", "blackhole"):
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPServiceUnavailable()  # never seen: the connection is gone
        if rule.kind == "blackhole":
            await self._while_installed(rule)  # then the connection drops: the client retries
        if rule.kind == "delay":
            await asyncio.sleep(rule.delay_s)
            return await self._forward(request, body, operation)
        if rule.kind == "slow_answer":
            answer = await self._forward(request, body, operation)
            await asyncio.sleep(rule.delay_s)
            return answer
        if rule.kind == "unprocessed" and operation == "BatchWriteItem":
            return await self._unprocessed(request, body, rule)
        if rule.kind == "absorb":
            return web.Response(body=NOTHING_UNPROCESSED, content_type="application/x-amz-json-1.0")
        return error_response(request, rule.code, rule.status)

    async def _forward(self, request: web.Request, body: bytes, operation: str) -> web.Response:
        self.forwarded[operation] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            if self._count_tables and is_dynamodb(request):
                self._tally(operation, body, answer.status, payload, kept)
            return web.Response(status=answer.status, body=payload, headers=kept)

    def _tally(
        self, operation: str, body: bytes, status: int, payload: bytes, headers: dict[str, str]
    ) -> None:
        try:
            if headers.get("Content-Encoding") == "gzip":
                payload = gzip.decompress(payload)
            request = orjson.loads(body)
            items = items_by_table(operation, request, status, payload)
        except (ValueError, TypeError, KeyError, AttributeError, OSError):  # not DynamoDB's JSON
            with self._lock:
                self.table_errors += 1
            return
        with self._lock:
            consistent = request.get("ConsistentRead") is True
            self._tables.add(operation, items, consistent, refused=status != 200)

    async def _unprocessed(self, request: web.Request, body: bytes, rule: Rule) -> web.Response:
        """Write only part of a BatchWriteItem; report the rest as UnprocessedItems."""
        payload: dict[str, Any] = orjson.loads(body)
        keep: dict[str, list[Any]] = {}
        left: dict[str, list[Any]] = {}
        for table, requests in payload["RequestItems"].items():
            cut = len(requests) - max(1, round(len(requests) * rule.fraction))
            if requests[:cut]:
                keep[table] = requests[:cut]
            left[table] = requests[cut:]
        if keep:
            forwarded = await self._forward(
                request, orjson.dumps({**payload, "RequestItems": keep}), "BatchWriteItem"
            )
            if forwarded.status != 200:
                return forwarded
        answer = {"UnprocessedItems": left}
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        return web.Response(status=200, body=orjson.dumps(answer), headers=headers)


def operation_of(headers: Mapping[str, str], body: bytes) -> str:
    """The API operation a request calls: ``X-Amz-Target``'s last part (JSON APIs), else the
    form's ``Action`` (query APIs: SNS, SQS's query protocol); ``?`` when neither says."""
    target = headers.get("X-Amz-Target", "")
    if target:
        return target.rpartition(".")[2] or "?"
    if body.startswith(b"Action=") or b"&Action=" in body:
        actions = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action")
        if actions:
            return actions[0]
    return "?"


def is_dynamodb(request: web.Request) -> bool:
    return request.headers.get("X-Amz-Target", "").startswith("DynamoDB")


def error_response(request: web.Request, code: str, status: int) -> web.Response:
    """An AWS JSON-protocol error answer, as botocore parses it."""
    body = orjson.dumps({"__type": code, "message": f"injected by telemax fault proxy: {code}"})
    headers = {
        "Content-Type": request.headers.get("Content-Type", "application/x-amz-json-1.0"),
        "x-amzn-ErrorType": code,
    }
    return web.Response(status=status, body=body, headers=headers)
