"""What one request costs our client, with the server's cost taken away.

``python -m tests.bench.request_cost [--calls N] [--rounds R] [--latency MS] [--reads N]
[--tls]``: a null HTTP server in another process (uvloop; it answers every ``BatchWriteItem``
with ``{"UnprocessedItems":{}}``, at once or ``--latency`` milliseconds after it came) and, in
this one, ``FastDynamoDB.batch_write`` of 25 pre-built TELEMAX readings, 16 in flight as the
worker writes: CPU (user + system, ``getrusage``) per request and per item, each round, for
the readings as the worker writes them (entries its encoder made: their JSON joined into the
body), as item dicts (orjson encodes each request's body, as for a handler without an
encoder), and as the worker's sink sends them since the night of 2026-12-06 ("entries
prepared": a batch's requests framed and signed back to back, ``FastDynamoDB.preparer``,
then sent as answers come). The emulators' own work and their wake-ups stay out of the figure
(the ``floor`` contender of ``python -m tests.bench`` keeps them in): it is our signing,
framing, parsing and event loop.

``--latency``: the same work with the worker mostly idle between answers, as beside a slow
server (dynalite takes about 3 ms a request, so 16 in flight wait about 50 ms each): on this
VM it costs about twice the CPU (2026-12-06, item dicts: 48-69 µs a request at once, 95-117
at 20 ms), the same instructions run slower after the core has idled (``python -m
tests.bench.machine``).

``--reads N``: ``FastKinesis.get_records`` too, 4 in flight, each answered with the same
GetRecords answer of N producer readings as kinesalite writes it (``batch_cost``'s): a
request's and a record's CPU, the answer's parse and base64 decode included.

``--tls``: each kind also over TLS, interleaved with plain HTTP in every round — the null
server serves a throw-away CA's certificate (``devkit.certs``) on a second port, which the
client trusts as it would ``AWS_CA_BUNDLE`` —: what TLS adds, as a worker pays it against AWS's
endpoints (the emulators, and so the whole-worker bench, speak plain HTTP).

The measuring process runs with the worker's collector and allocator settings
(``consumer.cli.run_command``): without the allocator's, a GetRecords answer's large blocks
are mapped and faulted in afresh each time (4 ms of system time a 10,000-record answer, not
the worker's 0.2-0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from consumer.adapters.credentials import Frozen, StaticCredentials
from consumer.adapters.fastpath import FastDynamoDB, FastKinesis, PreparedWrite
from consumer.adapters.json_api import DYNAMODB, KINESIS, JsonApi
from consumer.adapters.tls import client_context
from consumer.allocator import keep_freed_memory
from consumer.cli import GC_THRESHOLDS
from devkit.certs import make_certificates
from devkit.local import free_port
from tests.bench.batch_cost import answer_body
from tests.bench.ceiling import entries_of, items_of

IN_FLIGHT = 16  # the worker's default TELEMAX_WRITE_CONCURRENCY
ITEMS = 25  # a BatchWriteItem's most
BATCH = 10_000  # items prepared at once (a GetRecords answer's most)
READERS = 4  # GetRecords in flight (the bench's 4 shards)
READ_RECORDS = 200_000  # readings read a round, whatever an answer holds
T = TypeVar("T")

NULL_SERVER = r"""
import asyncio, ssl, sys, uvloop

def reply(body):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body

WRITTEN = reply(b'{"UnprocessedItems":{}}')
port, tls_port, delay_s, records, cert, key = sys.argv[1:7]
RECORDS = reply(open(records, "rb").read()) if records else b""
DELAY_S = float(delay_s)

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
            answer = RECORDS if b".getrecords" in head else WRITTEN
            if DELAY_S:
                asyncio.get_running_loop().call_later(DELAY_S, self.transport.write, answer)
            else:
                self.transport.write(answer)

async def main():
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Null, "127.0.0.1", int(port))]
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        servers.append(await loop.create_server(Null, "127.0.0.1", int(tls_port), ssl=context))
    await asyncio.Event().wait()

uvloop.run(main())
"""

Figures = dict[str, list[float]]  # "kind, transport" -> µs a unit (an item, a record), a round


def summary(figures: Figures) -> list[str]:
    """A line a kind and transport: the median of its rounds (and their range); with TLS,
    what it adds to the same kind over plain HTTP (the medians' difference and ratio)."""
    lines = []
    for label, values in figures.items():
        line = (
            f"{label:>22}: {statistics.median(values):5.2f} µs a unit "
            f"({min(values):.2f}-{max(values):.2f}, {len(values)} rounds)"
        )
        kind, _, transport = label.rpartition(", ")
        plain = figures.get(f"{kind}, plain")
        if transport == "tls" and plain:
            added = statistics.median(values) - statistics.median(plain)
            ratio = statistics.median(values) / statistics.median(plain)
            line += f"; TLS adds {added:+.2f} ({ratio:.2f}x)"
        lines.append(line)
    return lines


async def measure(
    ports: dict[str, int], ca: str | None, calls: int, rounds: int, reads: int
) -> Figures:
    transports = {"plain": f"http://127.0.0.1:{ports['plain']}"}
    if ca is not None:
        transports["tls"] = f"https://127.0.0.1:{ports['tls']}"
    apis: list[JsonApi] = []

    def api(url: str, service: tuple[str, str, str]) -> JsonApi:
        made = JsonApi(
            StaticCredentials(Frozen("AKIDEXAMPLE", "secret", None)),
            endpoint=url,
            region="us-east-1",
            service=service,
            pool=2 * IN_FLIGHT,
            read_timeout=30.0,
            ssl_context=client_context(ca) if url.startswith("https") else None,
        )
        apis.append(made)
        return made

    writes: dict[str, list[Any]] = {
        "entries": entries_of(calls * ITEMS),  # as the worker writes TELEMAX readings
        "item dicts": items_of(calls * ITEMS),  # encoded by orjson a request at a time
    }
    # (label, the round's work, requests, units a request, what a unit is)
    jobs: list[tuple[str, Callable[[], Awaitable[None]], int, int, str]] = []
    for transport, url in transports.items():
        dynamodb = FastDynamoDB(api(url, DYNAMODB))
        for kind, items in writes.items():
            jobs.append((f"{kind}, {transport}", _writer(dynamodb, items), calls, ITEMS, "an item"))
        prepared = _prepared_writer(dynamodb, writes["entries"])
        jobs.append((f"entries prepared, {transport}", prepared, calls, ITEMS, "an item"))
        if reads:
            answers = max(READERS, READ_RECORDS // reads)
            kinesis = FastKinesis(api(url, KINESIS))
            reading = _reader(kinesis, answers)
            jobs.append((f"GetRecords, {transport}", reading, answers, reads, "a record"))
    figures: Figures = {label: [] for label, *_ in jobs}
    try:
        for _, work, *_ in jobs:
            await work()  # connections made, code warm: not counted
        # as the worker runs (consumer.cli.run_command): without the allocator's setting a
        # GetRecords answer's large blocks are mapped and faulted in afresh each time
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        keep_freed_memory()
        for round_ in range(1, rounds + 1):
            for label, work, requests, units, unit in jobs:
                started, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                await work()
                done = resource.getrusage(resource.RUSAGE_SELF)
                user, system = (
                    (after - before) / requests * 1e6
                    for before, after in (
                        (started.ru_utime, done.ru_utime),
                        (started.ru_stime, done.ru_stime),
                    )
                )
                per_call = user + system
                figures[label].append(per_call / units)
                print(
                    f"round {round_}, {label:>22}: {per_call:8.1f} µs of CPU a request "
                    f"(user {user:.1f}, system {system:.1f}), "
                    f"{per_call / units:5.2f} µs {unit} "
                    f"({requests:,} requests in {time.perf_counter() - wall:.2f} s)",
                    flush=True,
                )
    finally:
        for made in apis:
            made.close()
    return figures


def _writer(client: FastDynamoDB, items: list[Any]) -> Callable[[], Awaitable[None]]:
    """Every item written, ``ITEMS`` a request, ``IN_FLIGHT`` requests at once."""

    async def write(batch: list[Any]) -> None:
        await client.batch_write("TELEMAX", batch)

    return lambda: _drained(
        (items[i : i + ITEMS] for i in range(0, len(items), ITEMS)), write, IN_FLIGHT
    )


def _prepared_writer(client: FastDynamoDB, items: list[Any]) -> Callable[[], Awaitable[None]]:
    """The same, as the worker's sink writes: a batch's requests (``BATCH`` items) framed and
    signed back to back, then sent, ``IN_FLIGHT`` at once."""

    async def write() -> None:
        for start in range(0, len(items), BATCH):
            prepare = await client.preparer("TELEMAX")
            batch = items[start : start + BATCH]
            ready = [prepare(batch[i : i + ITEMS]) for i in range(0, len(batch), ITEMS)]
            await _drained(iter(ready), _sent, IN_FLIGHT)

    return write


async def _sent(prepared: PreparedWrite) -> None:
    await prepared.send()


def _reader(client: FastKinesis, answers: int) -> Callable[[], Awaitable[None]]:
    """``answers`` GetRecords calls, ``READERS`` at once."""

    async def read(_: int) -> None:
        await client.get_records("AAAA", 10_000)

    return lambda: _drained(iter(range(answers)), read, READERS)


async def _drained(todo: Iterator[T], call: Callable[[T], Awaitable[None]], at_once: int) -> None:
    """``call`` of each of ``todo``, ``at_once`` coroutines taking the next as each finishes."""

    async def worker() -> None:
        for each in todo:
            await call(each)

    await asyncio.gather(*(worker() for _ in range(at_once)))


def listening(ports: list[int], server: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Return once the null server accepts on every port (it may start slowly on a busy
    machine); raise if it exits or does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the null server is not listening on {port}") from None
                time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="ms the null server waits before answering"
    )
    parser.add_argument("--reads", type=int, default=0, help="readings a GetRecords answer")
    parser.add_argument("--tls", action="store_true", help="each kind over TLS as well")
    args = parser.parse_args()
    ports = {"plain": free_port(), "tls": free_port()}
    while ports["tls"] == ports["plain"]:  # (two free ports, one a server)
        ports["tls"] = free_port()
    with tempfile.TemporaryDirectory() as folder:
        cert = key = ca = records = ""
        if args.tls:
            made = make_certificates(Path(folder))
            cert, key, ca = str(made.cert), str(made.key), str(made.ca)
        if args.reads:
            records = str(Path(folder) / "records.json")
            Path(records).write_bytes(answer_body(args.reads))
        server = subprocess.Popen(
            [sys.executable, "-c", NULL_SERVER, str(ports["plain"]), str(ports["tls"]),
             str(args.latency / 1000), records, cert, key]
        )  # fmt: skip
        try:
            listening(list(ports.values()) if args.tls else [ports["plain"]], server)
            figures = uvloop.run(measure(ports, ca or None, args.calls, args.rounds, args.reads))
        finally:
            server.kill()
            server.wait()
    print("\nmedians:", *summary(figures), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
