"""SubscribeToShard's answer, decoded: AWS event-stream messages (botocore's own decoder,
which checks every CRC) to what :class:`~consumer.fanout.subscription.Subscription` reads.

AWS sends an ``initial-response`` event first (the JSON protocol's rule for event streams);
kinesis-local sends none (measured): it is optional here, and skipped when it comes. An
exception travels as a message of type ``exception`` under HTTP 200 (ResourceInUse when the
shard's previous subscription is still open): it is a failure of the subscription, not an
event. A record's ``Data`` comes base64-encoded in the JSON payload and leaves as bytes, as
the polling path delivers it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer

from consumer.adapters.record_data import decode_each

EVENT = "SubscribeToShardEvent"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    payload: dict[str, Any]  # Records (Data as bytes), ContinuationSequenceNumber, …
    size: int  # the message's bytes on the wire


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    code: str
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """A message with nothing for the subscription (initial-response, an unknown event)."""

    kind: str
    size: int


Message = Event | Failure | Skipped


class Decoder:
    """One HTTP/2 stream's bytes in, whole messages out (a message may span many DATA
    frames, and a frame hold many messages)."""

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes (botocore raises on a corrupt message)."""
        self._buffer.add_data(data)
        return [message_of(raw) for raw in self._buffer]


def message_of(raw: Any) -> Message:
    """One decoded message (an ``EventStreamMessage``; its stubs type it loosely)."""
    headers: dict[str, Any] = raw.headers
    kind = headers.get(":message-type")
    size = int(raw.prelude.total_length)
    if kind == "event":
        name = headers.get(":event-type", "")
        if name != EVENT:
            return Skipped(str(name), size)
        payload: dict[str, Any] = orjson.loads(raw.payload)
        decode_each(payload.get("Records") or ())
        return Event(payload, size)
    if kind == "exception":
        return Failure(str(headers.get(":exception-type", "UnknownException")), _text(raw))
    if kind == "error":
        return Failure(
            str(headers.get(":error-code", "UnknownError")),
            str(headers.get(":error-message", "")),
        )
    return Skipped(str(kind), size)


def _text(raw: Any) -> str:
    """An exception's message: its JSON payload's ``message``, else the payload itself."""
    try:
        found = orjson.loads(raw.payload)
    except orjson.JSONDecodeError:
        return bytes(raw.payload).decode(errors="replace")
    if isinstance(found, dict):
        return str(found.get("message") or found.get("Message") or "")
    return str(found)


def error_answer(status: int, body: bytes) -> Failure:
    """An error answer to SubscribeToShard itself (not an event stream): its code from
    ``__type`` as botocore reads it."""
    try:
        parsed = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        parsed = {"message": body.decode(errors="replace")}
    if not isinstance(parsed, dict):
        parsed = {"message": str(parsed)}
    code = str(parsed.get("__type") or f"HTTP{status}")
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    return Failure(code, str(parsed.get("message") or parsed.get("Message") or ""))
