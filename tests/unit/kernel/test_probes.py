"""The probes server: routing is pure (answer_to), the server only reads and writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, Counter

from devkit.local import free_port
from kernel.probes import Answer, Health, answer_to, routes, serve

pytestmark = pytest.mark.timeout(20)


def table(ready: bool = True, alive: bool = True) -> dict[str, Callable[[str], Answer]]:
    registry = CollectorRegistry()
    Counter("telemax_things", "things", registry=registry).inc(3)
    Counter("telemax_others", "others", ["shard"], registry=registry).labels("s-1").inc(5)
    health = Health(ready=lambda: ready)
    if not alive:
        health.beat_at = -1e9
    return routes(registry, health)


@pytest.mark.parametrize(
    ("head", "status", "body_sent"),
    [
        (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200, True),
        (b"HEAD /readyz HTTP/1.1\r\n\r\n", 200, False),
        (b"GET /healthz?verbose=1 HTTP/1.1\r\n\r\n", 200, True),
        (b"GET /nowhere HTTP/1.1\r\n\r\n", 404, True),
        (b"POST /metrics HTTP/1.1\r\n\r\n", 405, True),
        (b"garbage\r\n\r\n", 400, True),
        (b"\xff\xfe \xff\r\n\r\n", 400, True),
    ],
)
def test_routing(head: bytes, status: int, body_sent: bool) -> None:
    (got, _, _), with_body = answer_to(head, table())
    assert (got, with_body) == (status, body_sent)


def test_readiness_and_liveness_say_503_when_not() -> None:
    assert answer_to(b"GET /readyz HTTP/1.1\r\n\r\n", table(ready=False))[0][:2] == (
        503,
        "text/plain; charset=utf-8",
    )
    assert answer_to(b"GET /healthz HTTP/1.1\r\n\r\n", table(alive=False))[0][0] == 503


def test_metrics_can_be_asked_for_by_name_as_prometheus_clients_handler_allows() -> None:
    """``name[]`` narrows the answer to those samples: a test or bench that polls one counter
    several times a second must not pay the whole exposition each time (at 64 shards it was
    ~7 % of a bench worker's steady CPU at 5 polls a second)."""
    everything = answer_to(b"GET /metrics HTTP/1.1\r\n\r\n", table())[0][2]
    assert b"telemax_things_total 3.0" in everything and b"telemax_others_total" in everything
    head = b"GET /metrics?name[]=telemax_things_total HTTP/1.1\r\n\r\n"
    (status, _, body), _ = answer_to(head, table())
    assert status == 200
    assert b"telemax_things_total 3.0" in body and b"telemax_others" not in body
    escaped = b"GET /metrics?name%5B%5D=telemax_others_total&name%5B%5D=x HTTP/1.1\r\n\r\n"
    body = answer_to(escaped, table())[0][2]
    assert b'telemax_others_total{shard="s-1"} 5.0' in body and b"telemax_things" not in body


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()  # the server closes after its answer
    writer.close()
    return answer


async def test_the_server_answers_metrics_and_survives_bad_and_silent_clients() -> None:
    registry = CollectorRegistry()
    Counter("telemax_things", "things", registry=registry).inc(3)
    port = free_port()
    async with serve(registry, Health(ready=lambda: True), "127.0.0.1", port) as bound:
        assert bound == port
        silent = await asyncio.open_connection("127.0.0.1", port)  # sends nothing
        huge = await exchange(port, b"GET /" + b"x" * 70_000 + b" HTTP/1.1\r\n\r\n")
        assert huge == b"", "a request head over the limit is dropped, not answered"
        answer = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert f"Content-Length: {len(body)}".encode() in head
        assert b"telemax_things_total 3.0" in body
        ready = await exchange(port, b"GET /readyz HTTP/1.1\r\n\r\n")
        assert ready.endswith(b"\r\n\r\nready\n")
        silent[1].close()


async def test_port_zero_serves_nothing() -> None:
    async with serve(CollectorRegistry(), Health(), "127.0.0.1", 0) as bound:
        assert bound is None
