"""The stream consumer's registration with scripted Kinesis answers and a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.config import Settings
from consumer.fanout.registration import ensure_consumer, retrieval_for
from consumer.ops.fanout import deregister_consumer
from consumer.testing import FakeClock, client_error
from kernel.errors import ConfigError

STREAM_ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"
CONSUMER_ARN = STREAM_ARN + "/consumer/c:1"


class Kinesis:
    """DescribeStreamConsumer answers from ``states`` (None: not found), one per call, the
    last repeated; RegisterStreamConsumer raises ``register_error`` if set."""

    def __init__(self, states: list[str | None], register_error: Exception | None = None):
        self.states = states
        self.register_error = register_error
        self.calls: list[str] = []

    async def describe_stream_summary(self, **kw: Any) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamARN": STREAM_ARN}}

    async def describe_stream_consumer(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("describe")
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        if state is None:
            raise client_error("ResourceNotFoundException", "DescribeStreamConsumer")
        return {"ConsumerDescription": {"ConsumerStatus": state, "ConsumerARN": CONSUMER_ARN}}

    async def register_stream_consumer(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("register")
        assert kw == {"StreamARN": STREAM_ARN, "ConsumerName": "c"}
        if self.register_error is not None:
            raise self.register_error
        return {}

    async def deregister_stream_consumer(self, **kw: Any) -> dict[str, Any]:
        self.calls.append("deregister")
        if self.states[0] is None:
            raise client_error("ResourceNotFoundException", "DeregisterStreamConsumer")
        return {}


async def ensure(kinesis: Kinesis, wait_s: float = 60.0) -> str:
    clock = FakeClock()

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)

    return await ensure_consumer(
        kinesis,  # type: ignore[arg-type]
        "s",
        "c",
        wait_s=wait_s,
        clock=clock,
        sleep=sleep,
    )


async def test_an_active_consumer_is_reused_without_registering() -> None:
    kinesis = Kinesis(["ACTIVE"])
    assert await ensure(kinesis) == CONSUMER_ARN
    assert kinesis.calls == ["describe"]


async def test_a_missing_consumer_is_registered_and_waited_for() -> None:
    kinesis = Kinesis([None, "CREATING", "CREATING", "ACTIVE"])
    assert await ensure(kinesis) == CONSUMER_ARN
    assert kinesis.calls == ["describe", "register", "describe", "describe", "describe"]


async def test_a_replica_that_registered_first_is_waited_for() -> None:
    kinesis = Kinesis(
        [None, "CREATING", "ACTIVE"],
        register_error=client_error("ResourceInUseException", "RegisterStreamConsumer"),
    )
    assert await ensure(kinesis) == CONSUMER_ARN


async def test_a_consumer_being_deleted_is_waited_out_then_registered_again() -> None:
    kinesis = Kinesis(["DELETING", "DELETING", None, "ACTIVE"])
    assert await ensure(kinesis) == CONSUMER_ARN
    assert kinesis.calls.count("register") == 1


async def test_throttles_are_ridden_out() -> None:
    throttled = client_error("LimitExceededException", "DescribeStreamConsumer")
    kinesis = Kinesis([throttled, throttled, "ACTIVE"])  # type: ignore[list-item]
    assert await ensure(kinesis) == CONSUMER_ARN


async def test_a_missing_permission_is_one_line() -> None:
    kinesis = Kinesis(
        [None], register_error=client_error("AccessDeniedException", "RegisterStreamConsumer")
    )
    with pytest.raises(ConfigError) as raised:
        await ensure(kinesis)
    assert str(raised.value) == (
        "TELEMAX_RETRIEVAL=fanout needs kinesis:RegisterStreamConsumer on stream 's' "
        "(consumer 'c'): AccessDeniedException"
    )


async def test_a_consumer_never_active_stops_start_up_with_one_line() -> None:
    kinesis = Kinesis(["CREATING"])
    with pytest.raises(ConfigError, match=r"not ACTIVE after 10 s \(last seen: CREATING"):
        await ensure(kinesis, wait_s=10)


async def test_deregistering_says_whether_there_was_one() -> None:
    assert await deregister_consumer(Kinesis(["ACTIVE"]), "s", "c") is True  # type: ignore[arg-type]
    assert await deregister_consumer(Kinesis([None]), "s", "c") is False  # type: ignore[arg-type]


@pytest.mark.parametrize(("retrieval", "falls_back"), [("auto", True), ("fanout", False)])
async def test_auto_reads_by_polling_when_fan_out_is_refused_fanout_stops(
    retrieval: str, falls_back: bool
) -> None:
    async def refused(clients: Any, settings: Settings) -> Any:
        raise ConfigError("TELEMAX_RETRIEVAL=fanout needs kinesis:RegisterStreamConsumer")

    settings = Settings(retrieval=retrieval)
    with capture_logs() as logs:
        if falls_back:
            assert await retrieval_for(None, settings, refused) is None  # type: ignore[arg-type]
        else:
            with pytest.raises(ConfigError, match="needs kinesis:RegisterStreamConsumer"):
                await retrieval_for(None, settings, refused)  # type: ignore[arg-type]
    warned = [e for e in logs if e["event"] == "fanout_unavailable_reading_by_polling"]
    assert len(warned) == (1 if falls_back else 0)
