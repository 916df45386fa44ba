"""The operator's side of fan-out: show the stream consumer, or deregister it (a worker never
does: a rolling restart must not cut every replica's subscriptions). Deregistering ends every
subscription through it; workers with ``TELEMAX_RETRIEVAL=fanout`` register it again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consumer.fanout.registration import DENIED, denied, describe, stream_arn
from kernel.aws import error_code

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient


async def describe_consumer(
    kinesis: KinesisClient, stream: str, name: str
) -> dict[str, Any] | None:
    """The stream consumer ``name`` as DescribeStreamConsumer tells it; None when missing."""
    return await describe(kinesis, await stream_arn(kinesis, stream), name)


async def deregister_consumer(kinesis: KinesisClient, stream: str, name: str) -> bool:
    """Deregister ``name`` (an operator's act); False when there was none."""
    arn = await stream_arn(kinesis, stream)
    try:
        await kinesis.deregister_stream_consumer(StreamARN=arn, ConsumerName=name)
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return False
        if error_code(exc) in DENIED:
            raise denied("DeregisterStreamConsumer", stream, name, exc) from None
        raise
    return True
