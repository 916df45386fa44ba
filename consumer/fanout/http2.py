"""An HTTP/2 client connection for SubscribeToShard: the sans-I/O ``h2`` library over an
asyncio stream — TLS with ALPN ``h2`` for an ``https://`` endpoint (AWS), h2c with prior
knowledge for ``http://`` (kinesis-local's plain port). botocore speaks HTTP/1.1 only, and AWS
serves SubscribeToShard over HTTP/2 only.

One connection carries the subscriptions of many shards, one HTTP/2 stream each. Flow
control is the caller's: a stream's DATA is acknowledged (WINDOW_UPDATE) only when the caller
says it has taken the bytes (:meth:`Http2Stream.acknowledge`), so a consumer that stops reading
stops the server at ``window`` bytes a stream instead of filling memory.

The connection owns one task, its reader; :meth:`Http2Connection.aclose` cancels it and waits
for it. Every way a stream can end reaches its reader as a :class:`Closed`: ``clean`` after
END_STREAM, else why (reset, GOAWAY, the connection lost).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

STREAM_WINDOW = 1 << 20  # bytes a subscription may have unacknowledged (an event is < 1 MB)
CONNECTION_WINDOW = 64 << 20  # every stream's together: never the tighter of the two
READ_BYTES = 1 << 16


@dataclasses.dataclass(frozen=True, slots=True)
class Data:
    data: bytes
    flow: int  # what it counts against the window (padding included)


@dataclasses.dataclass(frozen=True, slots=True)
class Closed:
    clean: bool  # END_STREAM: the server ended the stream after its last DATA
    reason: str = ""


class Http2Error(Exception):
    """The endpoint is not usable over HTTP/2 (ALPN refused it, the preface failed)."""


class Http2Stream:
    """One request's answer: :meth:`response`, then :meth:`receive` until a :class:`Closed`."""

    def __init__(self, connection: Http2Connection, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._answered = asyncio.Event()
        self._chunks: asyncio.Queue[Data | Closed] = asyncio.Queue()
        self.closed: Closed | None = None
        self._owed = 0  # DATA bytes received and not yet given back to the windows

    async def response(self) -> int | Closed:
        """The status, once the headers are in; or how the stream closed before them."""
        await self._answered.wait()
        if self.status is None:
            assert self.closed is not None
            return self.closed
        return self.status

    async def receive(self) -> Data | Closed:
        """The next DATA, or the end (again and again once closed)."""
        if self.closed is not None and self._chunks.empty():
            return self.closed
        return await self._chunks.get()

    def acknowledge(self, flow: int) -> None:
        """The caller took ``flow`` bytes of this stream's DATA: the server may send more —
        after the stream's end too (the connection's window is still owed them); never more
        than was received and not yet given back."""
        taken = min(flow, self._owed)
        self._owed -= taken
        self._connection.acknowledge(self.stream_id, taken)

    def cancel(self) -> None:
        """RST_STREAM(CANCEL): the server frees the subscription; DATA not acknowledged yet
        (read or still queued) goes back to the connection's window, which every stream of
        the connection shares."""
        self._connection.cancel(self.stream_id)
        self.acknowledge(self._owed)

    def _answer(self, headers: Sequence[tuple[Any, Any]]) -> None:
        for raw_name, raw_value in headers:  # str: the connection decodes them (utf-8)
            name, value = str(raw_name), str(raw_value)
            if name == ":status":
                self.status = int(value)
            else:
                self.headers[name] = value
        self._answered.set()

    def _close(self, closed: Closed) -> None:
        if self.closed is None:
            self.closed = closed
            self._chunks.put_nowait(closed)
            self._answered.set()


class Http2Connection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authority: str,
        scheme: str,
        stream_window: int = STREAM_WINDOW,
    ) -> None:
        self.authority = authority
        self.scheme = scheme
        self._reader = reader
        self._writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._h2 = h2.connection.H2Connection(config=config)
        self._h2.initiate_connection()
        self._h2.update_settings(
            {
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: stream_window,
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
            }
        )
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        self._streams: dict[int, Http2Stream] = {}
        self._unacknowledged = 0
        self._going_away: str | None = None  # GOAWAY or the connection lost: no new stream
        self._flush()
        self._task = asyncio.create_task(self._read_loop(), name=f"http2 {authority}")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        stream_window: int = STREAM_WINDOW,
        timeout: float = 10.0,
    ) -> Http2Connection:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        context = None
        if secure:
            context = ssl_context or ssl.create_default_context()
            context.set_alpn_protocols(["h2"])
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if secure else None
            )
        if secure:
            chosen = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            if chosen != "h2":
                writer.close()
                raise Http2Error(f"{url} does not speak HTTP/2 (ALPN chose {chosen!r})")
        authority = host if parts.port is None else f"{host}:{port}"
        return cls(reader, writer, authority, parts.scheme, stream_window)

    @property
    def usable(self) -> bool:
        """New streams may be opened here (no GOAWAY, not lost, stream ids left)."""
        return self._going_away is None and self._h2.highest_outbound_stream_id < 2**31 - 64

    @property
    def streams(self) -> int:
        return len(self._streams)

    async def post(self, path: str, headers: Sequence[tuple[str, str]], body: bytes) -> Http2Stream:
        """Send a POST with ``body``; the stream to read the answer from."""
        if self._going_away is not None:
            raise ConnectionError(f"HTTP/2 connection to {self.authority}: {self._going_away}")
        stream_id = self._h2.get_next_available_stream_id()
        stream = self._streams[stream_id] = Http2Stream(self, stream_id)
        request = [
            (":method", "POST"),
            (":scheme", self.scheme),
            (":authority", self.authority),
            (":path", path),
            *headers,
            ("content-length", str(len(body))),
        ]
        self._h2.send_headers(stream_id, request)
        self._h2.send_data(stream_id, body, end_stream=True)  # small: within any window
        self._flush()
        await self._writer.drain()
        return stream

    @property
    def unacknowledged(self) -> int:
        """DATA bytes received on live or ended streams and not yet given back (every byte is
        given back once: by its reader, or by a cancel)."""
        return self._unacknowledged

    def acknowledge(self, stream_id: int, flow: int) -> None:
        """Give back ``flow`` bytes: to the connection's window always (h2 credits a closed
        stream's bytes to it alone), to the stream's while it is open."""
        if flow:
            self._unacknowledged -= flow
            self._send(lambda: self._h2.acknowledge_received_data(flow, stream_id))

    def cancel(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        stream._close(Closed(False, "cancelled"))
        self._send(lambda: self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL))

    async def aclose(self) -> None:
        """Close every stream and the connection; the reader task is awaited."""
        self._lost("closed by us")
        self._send(self._h2.close_connection)
        self._writer.close()
        self._task.cancel()
        await asyncio.wait([self._task])  # not its CancelledError; ours still propagates

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(READ_BYTES)
                if not data:
                    self._lost("the connection was closed")
                    return
                events = self._h2.receive_data(data)
                for event in events:
                    self._dispatch(event)
                self._flush()
        except (OSError, h2.exceptions.ProtocolError) as exc:
            self._lost(f"the connection failed: {exc!r}")
        finally:
            self._writer.close()

    def _dispatch(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._answer(event.headers or ())
        elif isinstance(event, h2.events.DataReceived):
            stream = self._streams.get(event.stream_id)
            flow = event.flow_controlled_length or 0
            if stream is None:  # cancelled by us: give the window back at once
                if flow:
                    self._send(lambda: self._h2.acknowledge_received_data(flow, event.stream_id))
            else:
                stream._owed += flow
                self._unacknowledged += flow
                stream._chunks.put_nowait(Data(event.data or b"", flow))
        elif isinstance(event, h2.events.StreamEnded):
            self._end(event.stream_id, Closed(True))
        elif isinstance(event, h2.events.StreamReset):
            self._end(event.stream_id, Closed(False, f"stream reset ({event.error_code!r})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 sends nothing more after a GOAWAY (not even WINDOW_UPDATE): every stream
            # ends here, after the DATA it received; subscriptions resume on a new connection
            self._lost(f"GOAWAY ({event.error_code!r})")

    def _end(self, stream_id: int, closed: Closed) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream._close(closed)

    def _lost(self, reason: str) -> None:
        self._going_away = self._going_away or reason
        for stream_id in list(self._streams):
            self._end(stream_id, Closed(False, reason))

    def _send(self, action: Callable[[], object]) -> None:
        """An h2 action whose frames go out now; none once the connection is closing (h2
        refuses most after a GOAWAY either way)."""
        if self._writer.is_closing():
            return
        try:
            action()
        except h2.exceptions.ProtocolError:  # the stream or the connection closed already
            return
        self._flush()

    def _flush(self) -> None:
        outgoing = self._h2.data_to_send()
        if outgoing and not self._writer.is_closing():
            self._writer.write(outgoing)
