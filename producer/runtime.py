"""What ``generate`` and ``tail`` share at run time: the stream check, the metrics server,
signals, and the mapping from failures to one-line errors and exit codes."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from structlog.typing import FilteringBoundLogger

from kernel import probes
from kernel.aws import AWS_ERRORS, config_error_from, error_code, lacks_setup
from kernel.errors import ConfigError
from kernel.tasks import running
from producer.metrics import ProducerMetrics

if TYPE_CHECKING:
    from types_aiobotocore_kinesis import KinesisClient

# Exit codes (documented in --help and the README).
EXIT_OK = 0
EXIT_INCOMPLETE = 1  # records failed or were left unacknowledged, or AWS failed mid-run
EXIT_CONFIG = 2  # bad flag or environment, missing stream, no permission, unreadable file, …
WRITABLE_STATUSES = ("ACTIVE", "UPDATING")
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnrecognizedClientException"})


async def check_stream(kinesis: KinesisClient, stream: str, log: FilteringBoundLogger) -> None:
    """Fail fast, with one line, when the stream is missing or not writable."""
    what = f"Kinesis stream {stream!r}"
    try:
        answer = await kinesis.describe_stream_summary(StreamName=stream)
    except Exception as exc:
        if error_code(exc) in DENIED:
            # A least-privilege producer role may allow PutRecords only: let PutRecords decide.
            log.warning("stream_not_described", stream=stream, error=error_code(exc))
            return
        raise config_error_from(exc, what) or exc from None
    status = answer["StreamDescriptionSummary"]["StreamStatus"]
    if status not in WRITABLE_STATUSES:
        raise ConfigError(f"{what} is {status}, not ACTIVE")


def failure(exc: BaseException, stream: str) -> tuple[int, str]:
    """(exit code, one line) for an exception that ended a run."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, AWS_ERRORS):
        error = config_error_from(exc, f"Kinesis stream {stream!r}") or exc
        if lacks_setup(exc) or error_code(exc) in DENIED | {"ResourceNotFoundException"}:
            return EXIT_CONFIG, str(error)  # no permission, stream deleted, no credentials
        return EXIT_INCOMPLETE, str(error)
    if isinstance(exc, OSError):
        return EXIT_INCOMPLETE, f"{exc.filename or 'I/O'}: {exc.strerror or exc}"
    return EXIT_INCOMPLETE, f"{type(exc).__name__}: {exc}"


@asynccontextmanager
async def metrics_server(
    metrics: ProducerMetrics, host: str, port: int, log: FilteringBoundLogger
) -> AsyncIterator[None]:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0: no server)."""
    if port == 0:
        yield
        return
    health = probes.Health(ready=lambda: True)
    async with AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(probes.serve(metrics.registry, health, host, port))
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {port}: cannot listen on {host}: {exc.strerror}"
            ) from None
        await stack.enter_async_context(running(health.beat_forever()))
        log.info("metrics_serving", host=host, port=port)
        yield


@asynccontextmanager
async def stop_on_signals(
    stop: asyncio.Event, log: FilteringBoundLogger, on_signal: Callable[[signal.Signals], None]
) -> AsyncIterator[None]:
    """SIGTERM and SIGINT set ``stop`` (and tell ``on_signal`` which one came)."""
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        log.info("signal_received", signal=sig.name)
        on_signal(sig)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
