"""The edge to AWS: client construction and error classification.

Errors are grouped by what the caller does with them (DESIGN: retry, give up, fence), so no
module above this one needs to know botocore's exception zoo.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from kernel.backoff import Backoff
from kernel.errors import Action, ConfigError

if TYPE_CHECKING:
    # aiobotocore (and aiohttp under it) is imported when generic clients are opened: a
    # worker on the lean start path never pays for it (consumer.adapters.lean)
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_kinesis import KinesisClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient


T = TypeVar("T")

# The longest an SQS ReceiveMessage waits for messages before it answers (its long poll; SQS's
# limit). Its answer starts only then, so the SQS client's read timeout is this much longer
# than the others': as long as the wait, every receive of an idle queue timed out and was
# retried (tests/integration/test_sqs.py, the idle queue).
SQS_LONG_POLL_S = 20
# what the SQS source's queue missing is answered with (botocore's code of the JSON protocol's
# x-amzn-query-error, as the query protocol named it), besides SNS's NotFound
MISSING_CODES = frozenset({"NotFound", "AWS.SimpleQueueService.NonExistentQueue"})

# What an AWS call raises, whatever the outcome (besides OSError): callers catch this and ask
# :func:`classify` (or :func:`config_error_from`) what it means, never botocore's classes.
AWS_ERRORS: tuple[type[Exception], ...] = (BotoCoreError, ClientError)


THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "LimitExceededException",
        "KMSThrottlingException",
        "TooManyRequestsException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerErrorException",
        "KMSInternalException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_throttle(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLE_CODES


def classify(exc: BaseException) -> Action:
    code = error_code(exc)
    if code == "ConditionalCheckFailedException":
        return Action.FENCE
    if code in THROTTLE_CODES or code in TRANSIENT_CODES:
        return Action.RETRY
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return Action.RETRY if status >= 500 else Action.GIVE_UP
    if isinstance(exc, HTTPClientError | BotoConnectionError | ConnectionError | TimeoutError):
        return Action.RETRY
    return Action.GIVE_UP


async def unless_fenced(write: Awaitable[T]) -> T | None:
    """The answer of a conditional write, or None when its condition failed: a lost race is a
    return value, never an exception (DESIGN §3.1)."""
    try:
        return await write
    except ClientError as exc:
        if classify(exc) is Action.FENCE:
            return None
        raise


async def patiently(call: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
    """``call()``, again after a transient error (throttling, 5xx, a reset) with capped
    backoff, ``attempts`` times in all (about 6 s): for start-up checks, where a throttled
    control plane must not read as a configuration error and stop the worker."""
    backoff = Backoff(base=0.2, cap=2.0)
    for _ in range(attempts - 1):
        try:
            return await call()
        except Exception as exc:
            if classify(exc) is not Action.RETRY:
                raise
        await backoff.sleep()
    return await call()


Check = tuple[str, Callable[[], Awaitable[object]]]  # (what, a call that proves it usable)


async def check_usable(checks: Sequence[Check]) -> None:
    """Start-up: each resource answers (``patiently``), or one ConfigError line naming it
    (a ``NotFound``, as SNS says it, or SQS's missing queue, reads as "does not exist" too)."""
    for what, check in checks:
        try:
            await patiently(check)
        except Exception as exc:
            if error_code(exc) in MISSING_CODES:
                raise ConfigError(f"{what} does not exist") from None
            raise config_error_from(exc, what) or exc from None


async def scan_pages(
    scan: Callable[..., Awaitable[Mapping[str, Any]]], **kwargs: Any
) -> AsyncIterator[Mapping[str, Any]]:
    """Every page of a DynamoDB Scan, following ``LastEvaluatedKey``. ``scan`` is the client's
    bound method (``client.scan``): the caller names the client, so the IAM test sees the call
    where the table is known."""
    while True:
        page = await scan(**kwargs)
        yield page
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


def describe(exc: BaseException, limit: int = 300) -> str:
    """One line for logs and error messages (servers may answer with whole HTML pages)."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        text = f"{err.get('Code', 'ClientError')}: {err.get('Message', '')}".rstrip(": ")
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def lacks_setup(exc: BaseException) -> bool:
    """No credentials or no region: the machine is not set up for AWS at all."""
    return isinstance(exc, NoCredentialsError | PartialCredentialsError | NoRegionError)


def config_error_from(exc: BaseException, what: str) -> ConfigError | None:
    """Turn an exception met while checking ``what`` into an operator-facing line, if it is one."""
    code = error_code(exc)
    if isinstance(exc, NoRegionError):
        return ConfigError("no AWS region configured: set AWS_REGION (e.g. AWS_REGION=eu-west-1)")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ConfigError(
            "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or an instance/task role"
        )
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return ConfigError(f"cannot reach {what}: {describe(exc)}")
    if code == "ResourceNotFoundException":
        return ConfigError(f"{what} does not exist (create it with `telemax-consumer setup`)")
    if code in {"AccessDeniedException", "UnrecognizedClientException", "AccessDenied"}:
        return ConfigError(f"not allowed to use {what}: {describe(exc)}")
    if isinstance(exc, BotoCoreError | ClientError):
        return ConfigError(f"cannot use {what}: {describe(exc)}")
    return None


@dataclasses.dataclass(frozen=True)
class Clients:
    kinesis: KinesisClient
    dynamodb: DynamoDBClient
    session: AioSession
    # clients of the services only some configurations use (alerts, archive, SQS source)
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def ca_bundle(self) -> str | None:
        """The roots the generic clients verify TLS with: the lean paths trust the same."""
        return ca_bundle_of(self.session)

    @property
    def sns(self) -> SNSClient:
        return self._extra("sns")  # type: ignore[no-any-return]

    @property
    def s3(self) -> S3Client:
        return self._extra("s3")  # type: ignore[no-any-return]

    @property
    def sqs(self) -> SQSClient:
        return self._extra("sqs")  # type: ignore[no-any-return]

    def _extra(self, service: str) -> Any:
        try:
            return self.extra[service]
        except KeyError:
            raise RuntimeError(
                f"no {service} client: open_clients(services=...) names it"
            ) from None


def client_config(*, pool: int = 64, attempts: int = 3, read_timeout: float = 20) -> AioConfig:
    from aiobotocore.config import AioConfig

    return AioConfig(
        max_pool_connections=pool,
        connect_timeout=5,
        read_timeout=read_timeout,
        # botocore's own retries handle throttling and 5xx for single calls; our loops add
        # backoff around them (UnprocessedItems, shard reads) where a call must not give up.
        retries={"mode": "standard", "total_max_attempts": attempts},
    )


class ConfigVariables(Protocol):
    """botocore's session as far as configuration goes (or consumer.adapters.lean's)."""

    def get_config_variable(self, logical_name: str) -> Any: ...


def ca_bundle_of(session: ConfigVariables) -> str | None:
    """The CA bundle botocore verifies TLS with when not its default (AWS_CA_BUNDLE, the
    profile's ``ca_bundle``); None: its default."""
    bundle = session.get_config_variable("ca_bundle")
    return str(bundle) if bundle else None


def check_ca_bundle(session: ConfigVariables) -> None:
    """A CA bundle named must exist: botocore would say only "No such file or directory" at
    the first call."""
    bundle = ca_bundle_of(session)
    if bundle and not os.path.exists(bundle):
        raise ConfigError(f"AWS_CA_BUNDLE {bundle!r} does not exist (the roots to verify TLS)")


@asynccontextmanager
async def open_clients(
    *,
    pool: int = 64,
    attempts: int = 3,
    read_timeout: float = 20,
    services: Sequence[str] = (),
) -> AsyncIterator[Clients]:
    """Kinesis and DynamoDB clients (and those of ``services``: ``sns``, ``s3``, ``sqs``)
    sharing one configuration — but SQS's read timeout, longer by a long poll —; closed on
    exit."""
    from aiobotocore.session import get_session

    session = get_session()
    config = client_config(pool=pool, attempts=attempts, read_timeout=read_timeout)
    long_polls = client_config(
        pool=pool, attempts=attempts, read_timeout=read_timeout + SQS_LONG_POLL_S
    )
    # botocore reads AWS_DEFAULT_REGION (and profiles); Lambda, ECS and most tools set
    # AWS_REGION, which is what our documentation promises.
    region = session.get_config_variable("region") or os.environ.get("AWS_REGION") or None
    check_ca_bundle(session)
    async with AsyncExitStack() as stack:
        try:
            kinesis = await stack.enter_async_context(
                session.create_client("kinesis", config=config, region_name=region)
            )
            dynamodb = await stack.enter_async_context(
                session.create_client("dynamodb", config=config, region_name=region)
            )
            extra = {
                service: await stack.enter_async_context(
                    session.create_client(  # type: ignore[call-overload]
                        service,
                        config=long_polls if service == "sqs" else config,
                        region_name=region,
                    )
                )
                for service in services
            }
        except BotoCoreError as exc:
            raise config_error_from(exc, "AWS") or exc from None
        yield Clients(kinesis=kinesis, dynamodb=dynamodb, session=session, extra=extra)
