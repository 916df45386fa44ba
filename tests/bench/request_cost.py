"""What one ``BatchWriteItem`` costs our client, with the server's cost taken away.

``python -m tests.bench.request_cost [--calls N] [--rounds R] [--latency MS]``: a null HTTP
server in another process (uvloop; it answers every request with ``{"UnprocessedItems":{}}``,
at once or ``--latency`` milliseconds after it came) and, in
this one, ``FastDynamoDB.batch_write`` of 25 pre-built TELEMAX readings, 16 in flight as the
worker writes: CPU (user + system, ``getrusage``) per request and per item, each round, for
the readings as the worker writes them (entries its encoder made: their JSON joined into the
body) and as item dicts (orjson encodes each request's body, as for a handler without an
encoder). The emulators' own work and their wake-ups stay out of the figure (the ``floor``
contender of ``python -m tests.bench`` keeps them in): it is our signing, framing, parsing and
event loop.

``--latency``: the same work with the worker mostly idle between answers, as beside a slow
server (dynalite takes about 3 ms a request, so 16 in flight wait about 50 ms each): on this
VM it costs about twice the CPU (2026-12-06, item dicts: 48-69 µs a request at once, 95-117
at 20 ms), the same instructions run slower after the core has idled (``python -m
tests.bench.machine``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from typing import Any

import uvloop

from consumer.adapters.credentials import Frozen, StaticCredentials
from consumer.adapters.fastpath import DYNAMODB, FastDynamoDB, JsonApi
from devkit.local import free_port
from tests.bench.ceiling import entries_of, items_of

IN_FLIGHT = 16  # the worker's default TELEMAX_WRITE_CONCURRENCY
ITEMS = 25  # a BatchWriteItem's most

NULL_SERVER = r"""
import asyncio, sys, uvloop

REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
         b"Content-Length: 23\r\n\r\n" + b'{"UnprocessedItems":{}}')

DELAY_S = float(sys.argv[2])

class Null(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, bytearray()

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            if DELAY_S:
                asyncio.get_running_loop().call_later(DELAY_S, self.transport.write, REPLY)
            else:
                self.transport.write(REPLY)

async def main():
    server = await asyncio.get_running_loop().create_server(Null, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()

uvloop.run(main())
"""


async def measure(port: int, calls: int, rounds: int) -> None:
    api = JsonApi(
        StaticCredentials(Frozen("AKIDEXAMPLE", "secret", None)),
        endpoint=f"http://127.0.0.1:{port}",
        region="us-east-1",
        service=DYNAMODB,
        pool=2 * IN_FLIGHT,
        read_timeout=30.0,
    )
    client = FastDynamoDB(api)
    kinds: dict[str, list[Any]] = {
        "entries": entries_of(calls * ITEMS),  # as the worker writes TELEMAX readings
        "item dicts": items_of(calls * ITEMS),  # encoded by orjson a request at a time
    }

    async def write_all(items: list[Any]) -> None:
        todo = (items[i : i + ITEMS] for i in range(0, len(items), ITEMS))

        async def writer() -> None:
            for batch in todo:
                await client.batch_write("TELEMAX", batch)

        await asyncio.gather(*(writer() for _ in range(IN_FLIGHT)))

    try:
        for items in kinds.values():
            await write_all(items)  # connections made, code warm: not counted
        for round_ in range(1, rounds + 1):
            for kind, items in kinds.items():
                started, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                await write_all(items)
                done = resource.getrusage(resource.RUSAGE_SELF)
                user, system = (
                    (after - before) / calls * 1e6
                    for before, after in (
                        (started.ru_utime, done.ru_utime),
                        (started.ru_stime, done.ru_stime),
                    )
                )
                per_call = user + system
                print(
                    f"round {round_}, {kind:>10}: {per_call:6.1f} µs of CPU a request "
                    f"(user {user:.1f}, system {system:.1f}), "
                    f"{per_call / ITEMS:5.2f} µs an item "
                    f"({calls:,} requests in {time.perf_counter() - wall:.2f} s)",
                    flush=True,
                )
    finally:
        api.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="ms the null server waits before answering"
    )
    args = parser.parse_args()
    port = free_port()
    delay = str(args.latency / 1000)
    server = subprocess.Popen([sys.executable, "-c", NULL_SERVER, str(port), delay])
    try:
        time.sleep(1.0)  # (it listens well within this)
        uvloop.run(measure(port, args.calls, args.rounds))
    finally:
        server.kill()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
