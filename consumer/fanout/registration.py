"""The stream consumer that enhanced fan-out reads through: registered by the first worker
that needs it, reused by name by every other, waited for until ``ACTIVE``; deregistered only
by an operator (``telemax-consumer fanout deregister``: :mod:`consumer.ops.fanout`), never
by a worker stopping — a rolling restart must not cut every replica's subscriptions.

Registration races between replicas are ordinary: a ``ResourceInUseException`` from
RegisterStreamConsumer means another replica registered the name first, and its consumer is
the one to wait for. A consumer being deleted (an operator deregistered it) is waited out,
then registered again. A missing permission stops start-up with one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kernel.aws import classify, error_code
from kernel.errors import Action, ConfigError
from kernel.logs import get as get_logger

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

    from consumer.config import Settings
    from consumer.fanout.reader import Subscriber
    from kernel.aws import Clients

POLL_S = 0.5  # DescribeStreamConsumer while CREATING or DELETING (AWS: seconds)
WAIT_S = 180.0  # the longest a worker waits for its consumer to become ACTIVE
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"})


async def stream_arn(kinesis: KinesisClient, stream: str) -> str:
    summary = await kinesis.describe_stream_summary(StreamName=stream)
    arn: str = summary["StreamDescriptionSummary"]["StreamARN"]
    return arn


async def ensure_consumer(
    kinesis: KinesisClient,
    stream: str,
    name: str,
    *,
    wait_s: float = WAIT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> str:
    """The ARN of the ``ACTIVE`` stream consumer ``name``, registered if missing."""
    arn = await stream_arn(kinesis, stream)
    deadline = clock() + wait_s
    state = "missing"
    while clock() < deadline:
        try:
            found = await describe(kinesis, arn, name)
            state = "missing" if found is None else str(found["ConsumerStatus"])
            if found is not None and state == "ACTIVE":
                consumer_arn: str = found["ConsumerARN"]
                return consumer_arn
            if found is None:
                await _register(kinesis, arn, stream, name)
        except Exception as exc:
            if classify(exc) is not Action.RETRY:
                raise
            state = f"{state}, then {error_code(exc) or type(exc).__name__}"
        await sleep(POLL_S)
    raise ConfigError(
        f"TELEMAX_RETRIEVAL=fanout: stream consumer {name!r} of {stream!r} is not ACTIVE "
        f"after {wait_s:.0f} s (last seen: {state}; a stream has at most 20 consumers)"
    )


async def _register(kinesis: KinesisClient, arn: str, stream: str, name: str) -> None:
    try:
        await kinesis.register_stream_consumer(StreamARN=arn, ConsumerName=name)
    except Exception as exc:
        code = error_code(exc)
        if code in DENIED:
            raise denied("RegisterStreamConsumer", stream, name, exc) from None
        if code not in ("ResourceInUseException", "LimitExceededException"):
            raise
        # ResourceInUse: another replica registered it first; LimitExceeded: the control
        # plane's rate (5 a second) or the stream's 20 consumers — retried until the
        # deadline, then said in one line


async def describe(kinesis: KinesisClient, arn: str, name: str) -> dict[str, Any] | None:
    try:
        answer = await kinesis.describe_stream_consumer(StreamARN=arn, ConsumerName=name)
    except Exception as exc:
        code = error_code(exc)
        if code == "ResourceNotFoundException":
            return None
        if code in DENIED:
            raise denied("DescribeStreamConsumer", arn, name, exc) from None
        raise
    found: dict[str, Any] = dict(answer["ConsumerDescription"])
    return found


def denied(api: str, stream: str, name: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"TELEMAX_RETRIEVAL=fanout needs kinesis:{api} on stream {stream!r} (consumer "
        f"{name!r}): {error_code(exc)}"
    )


async def retrieval_for(
    clients: Clients, settings: Settings, make: Callable[..., Awaitable[Subscriber]] | None = None
) -> Subscriber | None:
    """What ``TELEMAX_RETRIEVAL`` asks for: fan-out's Subscriber, or None for polling —
    ``auto`` falls back to polling, with a warning, when the consumer cannot be registered
    (``fanout`` stops start-up with the one line instead)."""
    try:
        return await (make or subscriber_for)(clients, settings)
    except ConfigError as exc:
        if settings.retrieval != "auto":
            raise
        get_logger().warning("fanout_unavailable_reading_by_polling", error=str(exc))
        return None


async def subscriber_for(clients: Clients, settings: Settings) -> Subscriber:
    """The worker's Subscriber: its stream consumer registered (or found) and ACTIVE, its
    requests signed with the session's credentials for the Kinesis endpoint in use."""
    from consumer.adapters.sigv4 import SigV4
    from consumer.adapters.tls import client_context
    from consumer.fanout.http2 import Http2Connection
    from consumer.fanout.reader import Subscriber

    kinesis = clients.kinesis
    arn = await ensure_consumer(kinesis, settings.stream, settings.stream_consumer_name)
    credentials = await clients.session.get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials found")
    endpoint = kinesis.meta.endpoint_url
    signer = SigV4(endpoint.rstrip("/") + "/", kinesis.meta.region_name, "kinesis")
    # the roots botocore trusts (ALPN h2 is added on each connection)
    tls = client_context(clients.ca_bundle()) if endpoint.startswith("https:") else None

    async def connect(url: str) -> Http2Connection:
        return await Http2Connection.open(url, ssl_context=tls)

    return Subscriber(endpoint, signer, credentials, arn, connect=connect)
