"""Enhanced fan-out for tests: AWS event-stream messages encoded, and a scripted HTTP/2
server on 127.0.0.1 (the ``h2`` library's server side) that answers each SubscribeToShard
with what the test says — events, exceptions, a reset, a GOAWAY, silence — and records what
it was asked and how much DATA the client acknowledged."""

from __future__ import annotations

import asyncio
import binascii
import dataclasses
import ssl
import struct
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import orjson


def encode_message(headers: Iterable[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message (string headers only), CRCs included."""
    encoded = b"".join(
        struct.pack("!B", len(name.encode()))
        + name.encode()
        + b"\x07"
        + struct.pack("!H", len(value.encode()))
        + value.encode()
        for name, value in headers
    )
    total = 16 + len(encoded) + len(payload)
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", binascii.crc32(prelude))
    body = prelude + encoded + payload
    return body + struct.pack("!I", binascii.crc32(body))


def shard_event(
    records: Iterable[tuple[str, bytes]],
    continuation: str | None,
    *,
    behind: int = 0,
    children: list[dict[str, Any]] | None = None,
) -> bytes:
    """A SubscribeToShardEvent of (sequence number, data) records."""
    payload = {
        "Records": [
            {
                "SequenceNumber": sequence,
                "Data": binascii.b2a_base64(data, newline=False).decode(),
                "PartitionKey": "p",
                "ApproximateArrivalTimestamp": 1_796_296_414.1,
            }
            for sequence, data in records
        ],
        "ContinuationSequenceNumber": continuation,
        "MillisBehindLatest": behind,
        "ChildShards": children,
    }
    return encode_message(
        [
            (":message-type", "event"),
            (":event-type", "SubscribeToShardEvent"),
            (":content-type", "application/json"),
        ],
        orjson.dumps(payload),
    )


def initial_response() -> bytes:
    return encode_message([(":message-type", "event"), (":event-type", "initial-response")], b"{}")


def exception_message(code: str, message: str) -> bytes:
    return encode_message(
        [
            (":message-type", "exception"),
            (":exception-type", code),
            (":content-type", "application/json"),
        ],
        orjson.dumps({"message": message}),
    )


@dataclasses.dataclass
class Request:
    """One SubscribeToShard the server received."""

    stream_id: int
    headers: dict[str, str]
    body: dict[str, Any]


class Answer:
    """What a script does with one request: send, wait, end, reset, go away."""

    def __init__(self, server: ScriptedHttp2Server, connection: _Connection, stream_id: int):
        self._server = server
        self._connection = connection
        self.stream_id = stream_id

    def respond(
        self, status: int = 200, content_type: str = "application/vnd.amazon.eventstream"
    ) -> None:
        self._connection.h2.send_headers(
            self.stream_id, [(":status", str(status)), ("content-type", content_type)]
        )
        self._connection.flush()

    async def send(self, data: bytes, end: bool = False) -> None:
        """DATA, waiting for the client's window when it is shut (flow control)."""
        h2c = self._connection.h2
        view = memoryview(data)
        while view:
            window = h2c.local_flow_control_window(self.stream_id)
            size = min(window, h2c.max_outbound_frame_size, len(view))
            if size <= 0:
                await self._connection.window_opened.wait()
                self._connection.window_opened.clear()
                continue
            h2c.send_data(self.stream_id, bytes(view[:size]))
            view = view[size:]
            self._connection.flush()
            await asyncio.sleep(0)
        if end:
            self.end()

    def end(self) -> None:
        self._connection.h2.end_stream(self.stream_id)
        self._connection.flush()

    def reset(self) -> None:
        self._connection.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        self._connection.flush()

    def go_away(self) -> None:
        self._connection.h2.close_connection(h2.errors.ErrorCodes.NO_ERROR)
        self._connection.flush()

    def drop_connection(self) -> None:
        self._connection.writer.close()

    @property
    def acknowledged(self) -> int:
        """DATA bytes of this stream the client acknowledged so far."""
        return self._connection.acknowledged.get(self.stream_id, 0)


Script = Callable[[Request, Answer], Coroutine[Any, Any, None]]


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self.window_opened = asyncio.Event()
        self.acknowledged: dict[int, int] = {}
        self.flush()

    def flush(self) -> None:
        outgoing = self.h2.data_to_send()
        if outgoing and not self.writer.is_closing():
            self.writer.write(outgoing)


class ScriptedHttp2Server:
    """h2c (prior knowledge) on 127.0.0.1; ``script`` answers each request in a task of its
    own. Use as ``async with ScriptedHttp2Server(script) as server: … server.url``."""

    def __init__(self, script: Script, *, tls: ssl.SSLContext | None = None) -> None:
        self._script = script
        self._tls = tls  # HTTPS (the context's ALPN decides what it agrees to) instead of h2c
        self.requests: list[Request] = []
        self.resets: list[int] = []  # streams the client reset (RST_STREAM)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.url = ""  # once entered

    async def __aenter__(self) -> ScriptedHttp2Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self._tls else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        connection = _Connection(reader, writer)
        bodies: dict[int, bytearray] = {}
        heads: dict[int, dict[str, str]] = {}
        try:
            while data := await reader.read(65_536):
                for event in connection.h2.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        heads[event.stream_id] = {str(k): str(v) for k, v in event.headers or ()}
                        bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data or b""
                        connection.h2.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        request = Request(
                            event.stream_id,
                            heads[event.stream_id],
                            orjson.loads(bytes(bodies[event.stream_id])),
                        )
                        self.requests.append(request)
                        answer = Answer(self, connection, event.stream_id)
                        task = asyncio.create_task(self._script(request, answer))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    elif isinstance(event, h2.events.StreamReset):
                        self.resets.append(event.stream_id)
                    elif isinstance(event, h2.events.WindowUpdated):
                        if event.stream_id:
                            connection.acknowledged[event.stream_id] = (
                                connection.acknowledged.get(event.stream_id, 0) + event.delta
                            )
                        connection.window_opened.set()
                connection.flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()
