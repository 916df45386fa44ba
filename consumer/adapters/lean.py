"""The lean start: Kinesis and DynamoDB clients on the lean path's signed JSON calls, for a
worker whose whole AWS configuration is in its environment (a container's usual case).

Importing aiobotocore (aiohttp under it), creating its two clients (service models, endpoint
rules) and its first calls cost about 0.35 CPU-s of every worker start-up (measured:
0.63 to 0.69 CPU-s to ready, of which imports 0.31, clients 0.085, the start-up checks 0.09).
Both services speak JSON, so the calls a worker makes besides records and leases (the
start-up checks, ListShards, DescribeStreamSummary) are the same signed POST as GetRecords:
:class:`LeanClient` answers any operation by its botocore name, with botocore's errors and its
standard retries (consumer.adapters.fastpath).

Only when botocore would resolve exactly what we resolve here: a region and (optionally)
endpoints and a CA bundle in environment variables, credentials static in the environment, a
web identity exchanged with STS (IRSA: :mod:`consumer.adapters.web_identity`) or a
container's credentials endpoint (an ECS task role, EKS Pod Identity:
:mod:`consumer.adapters.credentials`), no profile and no config or credentials file.
Anything else — a profile, the instance metadata service, FIPS or dual-stack endpoints —
takes the generic clients, and :func:`environment_of` says why (logged at start-up).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from consumer.adapters.credentials import PROVIDER as CONTAINER
from consumer.adapters.credentials import (
    ContainerSource,
    Frozen,
    RefreshingCredentials,
    StaticCredentials,
    container_source,
    fetch_container,
)
from consumer.adapters.fastpath import JsonClient
from consumer.adapters.json_api import DYNAMODB, KINESIS, SQS, Credentials, JsonApi
from consumer.adapters.tls import client_context
from consumer.adapters.web_identity import PROVIDER as WEB_IDENTITY
from consumer.adapters.web_identity import (
    WebIdentitySource,
    fetch_web_identity,
    web_identity_source,
)
from kernel.aws import SQS_LONG_POLL_S, Clients, check_ca_bundle

LEAN_POOL = 4  # connections for the control calls: a few at start-up, ListShards now and then
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
_UNSET_IF_TRUE = ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")


@dataclasses.dataclass(frozen=True)
class Environment:
    region: str
    kinesis_endpoint: str
    dynamodb_endpoint: str
    credentials: StaticCredentials | ContainerSource | WebIdentitySource
    ca_bundle: str | None
    s3_endpoint: str | None = None  # a configured one (None: AWS's, by region)
    sqs_endpoint: str = ""  # (the SQS source's: "" when unused)
    sns_endpoint: str = ""  # (the alerts': "" when unused)


def environment_of(env: Mapping[str, str], home: Path) -> Environment | str:
    """What botocore would resolve from ``env`` alone, or why it must resolve it itself."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCOUNT_ID"):
        if env.get(name):
            return f"{name} is set"
    files = (
        ("AWS_CONFIG_FILE", home / ".aws" / "config"),
        ("AWS_SHARED_CREDENTIALS_FILE", home / ".aws" / "credentials"),
    )
    for name, default in files:
        path = Path(env[name]).expanduser() if env.get(name) else default
        if path.exists():
            return f"{path} exists"
    for name in _UNSET_IF_TRUE:
        if env.get(name, "").lower() == "true":
            return f"{name} is true"
    # botocore's own variable first; AWS_REGION is what kernel.aws.open_clients adds
    region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if not region:
        return "no region in the environment"
    if not _REGION.match(region) or region.startswith(("us-iso", "eu-iso")):
        return f"region {region!r} is for botocore to resolve"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    configured = env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true"

    def configured_endpoint(service: str) -> str | None:
        url = env.get(f"AWS_ENDPOINT_URL_{service.upper()}") or env.get("AWS_ENDPOINT_URL")
        return url if configured and url else None

    def endpoint(service: str) -> str:
        return configured_endpoint(service) or f"https://{service}.{region}.{suffix}"

    credentials = credentials_of(env, home, region, configured_endpoint("sts"))
    if isinstance(credentials, str):
        return credentials

    return Environment(
        region=region,
        kinesis_endpoint=endpoint("kinesis"),
        dynamodb_endpoint=endpoint("dynamodb"),
        credentials=credentials,
        ca_bundle=env.get("AWS_CA_BUNDLE") or None,
        s3_endpoint=configured_endpoint("s3"),
        sqs_endpoint=endpoint("sqs"),
        sns_endpoint=endpoint("sns"),
    )


Source = StaticCredentials | ContainerSource | WebIdentitySource


def credentials_of(
    env: Mapping[str, str], home: Path, region: str, sts_endpoint: str | None
) -> Source | str:
    """The credentials botocore's chain would take from ``env`` (static ones, else a web
    identity, else a container's endpoint), or why it must look for them itself."""
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return StaticCredentials(Frozen(key, secret, env.get("AWS_SESSION_TOKEN") or None))
    if key or secret:
        return "the credentials in the environment are partial"
    identity = web_identity_source(env, region, sts_endpoint)
    if identity is not None:
        return identity
    # the providers botocore asks before the container's (the profile ones are ruled out)
    for name in ("AWS_CREDENTIAL_FILE", "BOTO_CONFIG"):
        if env.get(name):
            return f"{name} is set"
    for path in (home / ".boto", Path("/etc/boto.cfg")):
        if path.exists():
            return f"{path} exists"
    source = container_source(env)
    if source is None:
        return "the credentials are not in the environment"
    return source


class LeanClient(JsonClient):
    """Any operation of Kinesis or DynamoDB (:class:`JsonClient`), with the ``meta`` the
    worker reads of botocore's clients."""

    def __init__(self, api: JsonApi, *, endpoint: str, region: str, attempts: int) -> None:
        super().__init__(api, attempts)
        self.meta = SimpleNamespace(endpoint_url=endpoint, region_name=region)


def refreshing(source: Source) -> StaticCredentials | RefreshingCredentials:
    """The credentials of ``source``: static, or fetched and refreshed."""
    if isinstance(source, StaticCredentials):
        return source
    if isinstance(source, ContainerSource):
        return RefreshingCredentials(functools.partial(fetch_container, source), CONTAINER)
    return RefreshingCredentials(functools.partial(fetch_web_identity, source), WEB_IDENTITY)


class LeanSession:
    """What the worker asks of botocore's session: credentials and the CA bundle."""

    def __init__(self, environment: Environment, credentials: Credentials) -> None:
        self._environment = environment
        self._credentials = credentials

    async def get_credentials(self) -> Credentials:
        return self._credentials

    def get_config_variable(self, name: str) -> str | None:
        return {"ca_bundle": self._environment.ca_bundle, "region": self._environment.region}.get(
            name
        )


@asynccontextmanager
async def open_lean_clients(
    environment: Environment,
    *,
    read_timeout: float,
    attempts: int,
    services: Sequence[str] = (),
    pool: int = LEAN_POOL,
) -> AsyncIterator[Clients]:
    """:class:`Clients` of two :class:`LeanClient` and those of ``services``, as
    :func:`kernel.aws.open_clients` opens them: ``s3``, the archive's
    :class:`~consumer.adapters.s3.LeanS3`; ``sqs``, the SQS source's client on ``pool``
    connections, its read timeout longer by a long poll; ``sns``, the alerts'
    :class:`~consumer.adapters.sns.LeanSns`. Closed on exit."""
    unknown = set(services) - {"s3", "sqs", "sns"}
    if unknown:
        raise ValueError(f"no lean client for {sorted(unknown)}")
    s3, sqs, sns = ("s3" in services), ("sqs" in services), ("sns" in services)
    credentials = refreshing(environment.credentials)
    session = LeanSession(environment, credentials)
    check_ca_bundle(session)  # the generic clients' one line, the same
    urls = [environment.kinesis_endpoint, environment.dynamodb_endpoint]
    if s3:
        urls.append(environment.s3_endpoint or "https:")  # None: AWS's, over TLS
    if sqs:
        urls.append(environment.sqs_endpoint)
    if sns:
        urls.append(environment.sns_endpoint)
    secure = any(url.startswith("https:") for url in urls)
    tls = client_context(environment.ca_bundle) if secure else None

    def lean(endpoint: str, service: tuple[str, str, str], pool: int, timeout: float) -> LeanClient:
        api = JsonApi(
            credentials,
            endpoint=endpoint,
            region=environment.region,
            service=service,
            pool=pool,
            read_timeout=timeout,
            ssl_context=tls,
        )
        closing.append(api.close)
        return LeanClient(api, endpoint=endpoint, region=environment.region, attempts=attempts)

    closing: list[Callable[[], None]] = []
    kinesis = lean(environment.kinesis_endpoint, KINESIS, LEAN_POOL, read_timeout)
    dynamodb = lean(environment.dynamodb_endpoint, DYNAMODB, LEAN_POOL, read_timeout)
    extra: dict[str, Any] = {}
    if sqs:
        # the receives' long polls each hold a connection: the deletes and visibility
        # extensions have connections beside them (a pool of the worker's size)
        timeout = read_timeout + SQS_LONG_POLL_S
        extra["sqs"] = lean(environment.sqs_endpoint, SQS, pool, timeout)
    # the S3 and SNS adapters, each on its own connections, with the same settings
    others: list[tuple[str, Any, str | None]] = []
    if s3:
        from consumer.adapters.s3 import LeanS3

        others.append(("s3", LeanS3, environment.s3_endpoint))
    if sns:
        from consumer.adapters.sns import LeanSns

        others.append(("sns", LeanSns, environment.sns_endpoint))
    for name, adapter, endpoint in others:
        made = adapter(
            credentials,
            endpoint=endpoint,
            region=environment.region,
            read_timeout=read_timeout,
            attempts=attempts,
            ssl_context=tls,
        )
        extra[name] = made
        closing.append(made.close)
    try:
        yield Clients(
            kinesis=cast(Any, kinesis),
            dynamodb=cast(Any, dynamodb),
            session=cast(Any, session),
            extra=extra,
        )
    finally:
        for close in closing:
            close()
        if isinstance(credentials, RefreshingCredentials):
            credentials.close()
