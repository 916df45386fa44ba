"""An HTTP/2-aware TCP proxy that ends SubscribeToShard subscriptions early and cleanly, as
AWS ends each after 5 minutes — which kinesis-local hard-codes (``interruptAfter(5.minutes)``
in its ``SubscribeToShardRequest.scala``), far too long for a test.

``python -m devkit.h2proxy --listen PORT --upstream HOST:PORT --end-after SECONDS``, on
127.0.0.1. A connection that opens with the HTTP/2 preface (h2c, prior knowledge) is relayed
stream by stream with ``h2`` on both sides; any other (botocore's HTTP/1.1 control plane) is a
plain byte pipe. An event-stream answer is ended ``--end-after`` seconds after its headers:
the upstream stream gets a CANCEL on a message boundary (never half an event relayed), and
the client's stream, once the emulator freed the subscription, a clean END_STREAM. Upstream
DATA is acknowledged only once relayed, so a slow client slows the emulator, as with AWS. Each
end is one line ``ended <stream id>`` on stderr. Nothing here is used by a production worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EVENT_STREAM = "application/vnd.amazon.eventstream"
RELEASE_S = 1.5  # between cancelling the emulator's subscription and ending the client's


class MessageBoundaries:
    """Where event-stream messages end in the bytes relayed (each message begins with its
    total length, 4 bytes big-endian): a stream may be cut only between two."""

    def __init__(self) -> None:
        self._head = b""  # the next message's length bytes seen so far
        self._left = 0  # bytes of the current message still to come

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            if self._left:
                taken = min(self._left, len(data) - at)
                self._left -= taken
                at += taken
                continue
            wanted = 4 - len(self._head)
            self._head += data[at : at + wanted]
            at += wanted
            if len(self._head) == 4:
                self._left = max(0, int.from_bytes(self._head, "big") - 4)
                self._head = b""

    @property
    def between_messages(self) -> bool:
        return not self._left and not self._head


class _Relayed:
    """One client stream and its upstream twin."""

    def __init__(self, client_id: int, upstream_id: int) -> None:
        self.client_id, self.upstream_id = client_id, upstream_id
        self.pending: list[tuple[bytes, int]] = []  # (data, upstream flow) not yet relayed
        self.upstream_ended = False
        self.ends_at: float | None = None  # an event stream: when to end it
        self.boundaries = MessageBoundaries()
        self.done = False
        self.closing_at: float | None = None  # upstream cancelled: the client's end is due


class H2Relay:
    """One client connection relayed to one upstream connection, both HTTP/2."""

    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        end_after: float,
    ) -> None:
        self._client_reader, self._client_writer = client
        self._up_reader, self._up_writer = upstream
        self._end_after = end_after
        self._down = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self._up = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._by_client: dict[int, _Relayed] = {}
        self._by_upstream: dict[int, _Relayed] = {}

    async def run(self, first: bytes) -> None:
        self._down.initiate_connection()
        self._up.initiate_connection()
        self._on_client(self._down.receive_data(first))
        self._flush()
        tasks = [
            asyncio.create_task(self._pump(self._client_reader, self._down, self._on_client)),
            asyncio.create_task(self._pump(self._up_reader, self._up, self._on_upstream)),
            asyncio.create_task(self._cut_when_due()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        side: h2.connection.H2Connection,
        handle: Callable[[Iterable[h2.events.Event]], None],
    ) -> None:
        while data := await reader.read(65_536):
            try:
                handle(side.receive_data(data))
            except h2.exceptions.ProtocolError:
                return
            self._flush()

    async def _cut_when_due(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            for relayed in list(self._by_client.values()):
                self._relay(relayed)
            self._flush()

    def _on_client(self, events: Iterable[h2.events.Event]) -> None:
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                upstream_id = self._up.get_next_available_stream_id()
                relayed = _Relayed(event.stream_id, upstream_id)
                self._by_client[event.stream_id] = self._by_upstream[upstream_id] = relayed
                self._up.send_headers(upstream_id, list(event.headers or ()))
            elif isinstance(event, h2.events.DataReceived):
                relayed = self._by_client[event.stream_id]
                self._up.send_data(relayed.upstream_id, event.data or b"")  # small JSON bodies
                self._down.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                self._up.end_stream(self._by_client[event.stream_id].upstream_id)
            elif isinstance(event, h2.events.StreamReset):
                gone = self._by_client.pop(event.stream_id or 0, None)
                if gone is not None and not gone.done:
                    gone.done = True
                    self._reset_upstream(gone)
            elif isinstance(event, h2.events.WindowUpdated):
                for relayed in list(self._by_client.values()):
                    self._relay(relayed)

    def _on_upstream(self, events: Iterable[h2.events.Event]) -> None:
        for event in events:
            relayed = self._by_upstream.get(getattr(event, "stream_id", 0) or 0)
            if relayed is None or relayed.done or relayed.closing_at is not None:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers: list[tuple[Any, Any]] = list(event.headers or ())
                if ("content-type", EVENT_STREAM) in headers:  # (utf-8 decoded headers)
                    relayed.ends_at = time.monotonic() + self._end_after
                self._down.send_headers(relayed.client_id, headers)
            elif isinstance(event, h2.events.DataReceived):
                relayed.pending.append((event.data or b"", event.flow_controlled_length or 0))
                self._relay(relayed)
            elif isinstance(event, h2.events.StreamEnded):
                relayed.upstream_ended = True
                self._relay(relayed)
            elif isinstance(event, h2.events.StreamReset):
                relayed.done = True
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self._down.reset_stream(relayed.client_id, h2.errors.ErrorCodes.CANCEL)

    def _relay(self, relayed: _Relayed) -> None:
        """As much of the stream's pending data as the client's window takes; its end."""
        if relayed.done:
            return
        down, sid = self._down, relayed.client_id
        while relayed.pending:
            data, flow = relayed.pending[0]
            room = min(down.local_flow_control_window(sid), down.max_outbound_frame_size)
            if room <= 0:
                return
            if len(data) > room:
                relayed.pending[0] = (data[room:], flow)
                down.send_data(sid, data[:room])
                relayed.boundaries.feed(data[:room])
                continue
            relayed.pending.pop(0)
            down.send_data(sid, data)
            relayed.boundaries.feed(data)
            self._up.acknowledge_received_data(flow, relayed.upstream_id)
        if relayed.upstream_ended:
            relayed.done = True
            down.end_stream(sid)
            return
        now = time.monotonic()
        if relayed.closing_at is not None:
            if now >= relayed.closing_at:
                relayed.done = True
                down.end_stream(sid)  # clean, as AWS ends a subscription
                print(f"ended {sid}", file=sys.stderr, flush=True)
            return
        due = relayed.ends_at is not None and now >= relayed.ends_at
        if due and relayed.boundaries.between_messages:
            # The emulator first (it frees the subscription within about a second), the
            # client after: as on AWS, whose subscription is over once its stream ends.
            self._reset_upstream(relayed)
            relayed.pending.clear()
            relayed.closing_at = now + RELEASE_S

    def _reset_upstream(self, relayed: _Relayed) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._up.reset_stream(relayed.upstream_id, h2.errors.ErrorCodes.CANCEL)

    def _flush(self) -> None:
        for side, writer in ((self._down, self._client_writer), (self._up, self._up_writer)):
            outgoing = side.data_to_send()
            if outgoing and not writer.is_closing():
                writer.write(outgoing)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65_536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _serve(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream: tuple[str, int],
    end_after: float,
) -> None:
    try:
        first = await client_reader.read(len(PREFACE))
        while first and len(first) < len(PREFACE) and PREFACE.startswith(first):
            more = await client_reader.read(len(PREFACE) - len(first))
            if not more:
                break
            first += more
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        client_writer.close()
        return
    try:
        if first.startswith(PREFACE):
            relay = H2Relay((client_reader, client_writer), (up_reader, up_writer), end_after)
            await relay.run(first)
        else:
            up_writer.write(first)
            await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))
    finally:
        client_writer.close()
        up_writer.close()


async def serve(port: int, upstream: tuple[str, int], end_after: float) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve(reader, writer, upstream, end_after)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await stopping.wait()


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
