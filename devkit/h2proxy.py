"""An HTTP/2-aware TCP proxy that ends SubscribeToShard subscriptions early and cleanly, as
AWS ends each after 5 minutes — which kinesis-local hard-codes (``interruptAfter(5.minutes)``
in kinesis-mock's ``api/SubscribeToShardRequest.scala``), far too long for a test.

``python -m devkit.h2proxy --listen PORT --upstream HOST:PORT --end-after SECONDS`` (on
127.0.0.1). A connection opening with the HTTP/2 preface (h2c, prior knowledge) is relayed
stream by stream, ``h2`` on both sides; any other (botocore's HTTP/1.1) is a byte pipe. Data is
acknowledged to its sender only once sent on: a slow client slows the emulator, as with AWS.

An event-stream answer (SubscribeToShard) is ended ``--end-after`` seconds after its headers
(not before its first event), once the message under way is relayed in full: what follows is
dropped, the emulator's stream is reset (CANCEL), which frees its subscription lease about a
second later, and the client's stream ends cleanly (END_STREAM) ``RELEASE_S`` after that, so a
client subscribing again at once finds the shard free, as on AWS. Each end: a line ``ended N``
on stderr. Nothing here is used by a production worker.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EVENT_STREAM = (b"content-type", b"application/vnd.amazon.eventstream")
RELEASE_S = 1.5  # kinesis-local frees a cancelled subscription within about 1 s (measured)
CANCEL = h2.errors.ErrorCodes.CANCEL
Conn: TypeAlias = h2.connection.H2Connection
Pair: TypeAlias = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler: TypeAlias = Callable[[list[h2.events.Event]], None]
Side: TypeAlias = tuple[Conn, int]  # a connection and a stream of it
Pending: TypeAlias = collections.deque[tuple[bytes, int] | None]  # (data, flow); None: end


class MessageBoundaries:
    """Where event-stream messages end in the bytes relayed (each begins with its total length,
    4 bytes big-endian, as botocore's ``EventStreamBuffer`` reads them): DATA frames split
    messages anywhere, and a stream may be cut only between two."""

    def __init__(self) -> None:
        self._head = b""  # the next message's length bytes seen so far
        self._left = 0  # bytes of the current message still to come
        self.messages = 0  # relayed in full

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._left:
                taken = min(self._left, len(data) - at)
                self._left, at = self._left - taken, at + taken
                self.messages += not self._left
                continue
            wanted = 4 - len(self._head)
            self._head, at = self._head + data[at : at + wanted], at + wanted
            if len(self._head) == 4:
                self._left = max(0, int.from_bytes(self._head, "big") - 4)
                self._head = b""
                self.messages += not self._left

    @property
    def between_messages(self) -> bool:
        return not self._left and not self._head

    def to_boundary(self, data: bytes) -> int | None:
        """How many of ``data``'s bytes, relayed next, end the message under way (0: none is;
        None: ``data`` ends before it does)."""
        if self._left or not self._head:
            needed = self._left
        elif len(data) < 4 - len(self._head):
            return None
        else:
            total = int.from_bytes(self._head + data[: 4 - len(self._head)], "big")
            needed = max(4, total) - len(self._head)
        return needed if needed <= len(data) else None


class _Stream:
    """One client stream and its upstream twin; what each direction has not yet sent on."""

    def __init__(self, client_id: int, upstream_id: int) -> None:
        self.client_id, self.upstream_id = client_id, upstream_id
        self.request: Pending = collections.deque()
        self.response: Pending = collections.deque()
        self.boundaries = MessageBoundaries()  # of the response
        self.ends_at: float | None = None  # an event stream: when to end it
        self.cancelled_at: float | None = None  # upstream reset: the client's end is due


class H2Relay:
    """One client connection relayed to one upstream connection, both HTTP/2. One task owns
    both connections' state: its pumps and ticker run on one event loop, never at once."""

    def __init__(self, client: Pair, upstream: Pair, end_after: float, ends: Iterator[int]) -> None:
        self._client, self._upstream = client, upstream
        self._end_after, self._ends = end_after, ends
        self._down = Conn(h2.config.H2Configuration(client_side=False))
        self._up = Conn(h2.config.H2Configuration(client_side=True))
        self._by_client: dict[int, _Stream] = {}
        self._by_upstream: dict[int, _Stream] = {}

    async def run(self, first: bytes) -> None:
        self._down.initiate_connection()
        self._up.initiate_connection()
        self._on_client(self._down.receive_data(first))
        self._advance()
        tasks = [
            asyncio.create_task(self._pump(self._client[0], self._down, self._on_client)),
            asyncio.create_task(self._pump(self._upstream[0], self._up, self._on_upstream)),
            asyncio.create_task(self._tick()),
        ]
        try:  # either connection closing (or failing) closes both
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    print(f"relay failed: {outcome!r}", file=sys.stderr, flush=True)

    async def _pump(self, reader: asyncio.StreamReader, side: Conn, handle: Handler) -> None:
        while data := await reader.read(65_536):
            handle(side.receive_data(data))
            self._advance()

    async def _tick(self) -> None:
        """Ends fall due with no frame arriving (kinesis-local sends one event a second)."""
        while True:
            await asyncio.sleep(0.05)
            self._advance()

    def _on_client(self, events: Iterable[h2.events.Event]) -> None:
        for event in events:
            s = self._by_client.get(getattr(event, "stream_id", 0))
            if isinstance(event, h2.events.RequestReceived):
                s = _Stream(event.stream_id, self._up.get_next_available_stream_id())
                self._by_client[s.client_id] = self._by_upstream[s.upstream_id] = s
                self._up.send_headers(s.upstream_id, event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self._take(s.request if s else None, event, self._down)
            elif isinstance(event, h2.events.StreamEnded) and s:
                s.request.append(None)
            elif isinstance(event, h2.events.StreamReset) and s:
                self._reset(self._up, s.upstream_id, CANCEL)
                self._forget(s)

    def _on_upstream(self, events: Iterable[h2.events.Event]) -> None:
        for event in events:
            s = self._by_upstream.get(getattr(event, "stream_id", 0))
            if s and s.cancelled_at is not None:
                s = None  # being ended: nothing more is relayed
            if isinstance(event, h2.events.ResponseReceived) and s:
                if EVENT_STREAM in event.headers:
                    s.ends_at = time.monotonic() + self._end_after
                self._down.send_headers(s.client_id, event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self._take(s.response if s else None, event, self._up)
            elif isinstance(event, h2.events.StreamEnded) and s:
                s.response.append(None)
            elif isinstance(event, h2.events.StreamReset) and s:
                self._reset(self._down, s.client_id, event.error_code)
                self._forget(s)

    @staticmethod
    def _take(pending: Pending | None, event: h2.events.DataReceived, side: Conn) -> None:
        """Keep received data until sent on; a gone stream's is dropped (and acknowledged)."""
        if pending is None:
            side.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        else:
            pending.append((event.data, event.flow_controlled_length))

    def _advance(self) -> None:
        """Every stream's pending data as far as the windows allow, its end or its cut."""
        for s in list(self._by_client.values()):
            try:
                self._advance_stream(s)
            except h2.exceptions.StreamClosedError:  # closed under us: both sides go
                self._reset(self._up, s.upstream_id, CANCEL)
                self._reset(self._down, s.client_id, CANCEL)
                self._forget(s)
        for side, (_, writer) in ((self._down, self._client), (self._up, self._upstream)):
            if (outgoing := side.data_to_send()) and not writer.is_closing():
                writer.write(outgoing)

    def _advance_stream(self, s: _Stream) -> None:
        up, down, now = (self._up, s.upstream_id), (self._down, s.client_id), time.monotonic()
        # not before its first event: kinesis-local sends that one about 2 s after the
        # request, and a reader whose every subscription ends before an event never gets on
        due = s.cancelled_at is None and s.ends_at is not None and now >= s.ends_at
        due = due and s.boundaries.messages > 0
        self._move(s.request, down, up)
        if self._move(s.response, up, down, s.boundaries, to_boundary=due):
            self._forget(s)  # answered in full
        elif due and s.boundaries.between_messages:  # no message half-relayed
            self._reset(self._up, s.upstream_id, CANCEL)
            self._drop(s.response, up)
            s.cancelled_at = now
        elif s.cancelled_at is not None and now >= s.cancelled_at + RELEASE_S:
            self._down.end_stream(s.client_id)  # clean, as AWS ends a subscription
            print(f"ended {next(self._ends)} (stream {s.client_id})", file=sys.stderr)
            self._forget(s)

    @staticmethod
    def _move(
        pending: Pending,
        src: Side,
        dst: Side,
        seen: MessageBoundaries | None = None,
        to_boundary: bool = False,
    ) -> bool:
        """As much of ``pending`` as ``dst``'s windows take (``to_boundary``: up to the end of
        the message under way), each chunk acknowledged to ``src`` once sent in full; True once
        the end was sent too."""
        while pending:
            if (head := pending[0]) is None:
                pending.popleft()
                dst[0].end_stream(dst[1])
                return True
            data, flow = head
            room = min(dst[0].local_flow_control_window(dst[1]), dst[0].max_outbound_frame_size)
            if seen is not None and to_boundary:
                if seen.between_messages:
                    return False
                room = min(room, seen.to_boundary(data) or len(data))
            if room <= 0 and data:
                return False
            dst[0].send_data(dst[1], data[:room])
            if seen is not None:
                seen.feed(data[:room])
            if len(data) > room:
                pending[0] = (data[room:], flow)
            else:
                pending.popleft()
                src[0].acknowledge_received_data(flow, src[1])
        return False

    @staticmethod
    def _drop(pending: Pending, src: Side) -> None:
        """Drop what ``pending`` holds, acknowledged to ``src`` (the connection's window)."""
        src[0].acknowledge_received_data(sum(item[1] for item in pending if item), src[1])
        pending.clear()

    def _forget(self, s: _Stream) -> None:
        """Stop relaying ``s`` (what it had pending: dropped)."""
        self._by_client.pop(s.client_id, None)
        self._by_upstream.pop(s.upstream_id, None)
        self._drop(s.request, (self._down, s.client_id))
        self._drop(s.response, (self._up, s.upstream_id))

    @staticmethod
    def _reset(side: Conn, sid: int, code: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):  # already closed
            side.reset_stream(sid, code)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _serve(
    client: Pair, upstream: tuple[str, int], end_after: float, ends: Iterator[int]
) -> None:
    """Sniff the first bytes (up to the preface's 24), then relay HTTP/2 or pipe bytes."""
    reader, writer = client
    try:
        first = b""
        while len(first) < len(PREFACE) and PREFACE.startswith(first):
            if not (more := await reader.read(len(PREFACE) - len(first))):
                break
            first += more
        up = await asyncio.open_connection(*upstream)
    except OSError:
        writer.close()
        return
    try:
        if first.startswith(PREFACE):
            await H2Relay(client, up, end_after, ends).run(first)
        else:
            up[1].write(first)
            await asyncio.gather(_pipe(reader, up[1]), _pipe(up[0], writer))
    finally:
        writer.close()
        up[1].close()


async def serve(port: int, upstream: tuple[str, int], end_after: float) -> None:
    """Until SIGTERM or SIGINT; then every connection's work is cancelled (its ``finally``
    closes both sockets) and awaited. Each runs in a task of its own, not in the handler's:
    Python 3.11 logs a traceback for a handler task cancelled, and ``async with server``
    would wait for the connections (``wait_closed``, 3.12+)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    ends, connections = itertools.count(1), set[asyncio.Task[None]]()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        work = asyncio.create_task(_serve((reader, writer), upstream, end_after, ends))
        connections.add(work)
        try:
            await asyncio.wait([work])  # (not raising when ``work`` is cancelled on a stop)
        finally:
            work.cancel()
            connections.discard(work)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await stopping.wait()
    server.close()
    for work in connections:
        work.cancel()
    await asyncio.gather(*connections, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--end-after", type=float, required=True, help="seconds")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(serve(args.listen, (host, int(port)), args.end_after))


if __name__ == "__main__":
    main()
