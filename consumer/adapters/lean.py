"""The lean start: Kinesis and DynamoDB clients on the lean path's signed JSON calls, for a
worker whose whole AWS configuration is in its environment (a container's usual case).

Importing aiobotocore (aiohttp under it), creating its two clients (service models, endpoint
rules) and its first calls cost about 0.35 CPU-s of every worker start-up (measured:
0.63 to 0.69 CPU-s to ready, of which imports 0.31, clients 0.085, the start-up checks 0.09).
Both services speak JSON, so the calls a worker makes besides records and leases (the
start-up checks, ListShards, DescribeStreamSummary) are the same signed POST as GetRecords:
:class:`LeanClient` answers any operation by its botocore name, with botocore's errors and its
standard retries (consumer.adapters.fastpath).

Only when botocore would resolve exactly what we resolve here: static credentials, a region
and (optionally) endpoints and a CA bundle all in environment variables, no profile and no
config or credentials file. Anything else — a profile, a web-identity token, a container
credentials endpoint, FIPS or dual-stack endpoints — takes the generic clients, and
:func:`environment_of` says why (logged at start-up).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson

from consumer.adapters.fastpath import (
    DYNAMODB,
    KINESIS,
    JsonApi,
    binary_as_bytes,
    json_default,
    retried,
)
from consumer.adapters.tls import client_context
from kernel.aws import Clients, check_ca_bundle

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME
LEAN_POOL = 4  # connections for the control calls: a few at start-up, ListShards now and then
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")
_UNSET_IF_TRUE = ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")


class Frozen(NamedTuple):
    """As botocore's ReadOnlyCredentials (importing botocore.credentials costs ~0.1 s)."""

    access_key: str
    secret_key: str
    token: str | None


@dataclasses.dataclass(frozen=True)
class StaticCredentials:
    frozen: Frozen

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        return cast("ReadOnlyCredentials", self.frozen)  # the same fields


@dataclasses.dataclass(frozen=True)
class Environment:
    region: str
    kinesis_endpoint: str
    dynamodb_endpoint: str
    credentials: StaticCredentials
    ca_bundle: str | None


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
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return "the credentials are not in the environment"
    # botocore's own variable first; AWS_REGION is what kernel.aws.open_clients adds
    region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
    if not region:
        return "no region in the environment"
    if not _REGION.match(region) or region.startswith(("us-iso", "eu-iso")):
        return f"region {region!r} is for botocore to resolve"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    configured = env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true"

    def endpoint(service: str) -> str:
        url = env.get(f"AWS_ENDPOINT_URL_{service.upper()}") or env.get("AWS_ENDPOINT_URL")
        return url if configured and url else f"https://{service}.{region}.{suffix}"

    return Environment(
        region=region,
        kinesis_endpoint=endpoint("kinesis"),
        dynamodb_endpoint=endpoint("dynamodb"),
        credentials=StaticCredentials(Frozen(key, secret, env.get("AWS_SESSION_TOKEN") or None)),
        ca_bundle=env.get("AWS_CA_BUNDLE") or None,
    )


def operation_of(method: str) -> str:
    """botocore's method name -> the API's operation name (describe_table -> DescribeTable)."""
    return "".join(part[:1].upper() + part[1:] for part in method.split("_"))


class LeanClient:
    """Any operation of a JSON-protocol service, called as on botocore's client: keyword
    arguments in, the answer as a dict out (DynamoDB's binary attributes as bytes; timestamps
    stay epoch seconds, which nothing on this path reads)."""

    def __init__(self, api: JsonApi, *, endpoint: str, region: str, attempts: int) -> None:
        self._api = api
        self._attempts = attempts
        self._items = api.signing_name == "dynamodb"
        self.meta = SimpleNamespace(endpoint_url=endpoint, region_name=region)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        operation = operation_of(name)

        async def call(**kwargs: Any) -> Any:
            # orjson would write a datetime as ISO text: the protocol wants epoch seconds
            body = orjson.dumps(kwargs, default=json_default, option=_PASSTHROUGH)
            answer = await retried(self._api, operation, body, self._attempts)
            return binary_as_bytes(answer) if self._items else answer

        setattr(self, name, call)  # made once per operation
        return call


class LeanSession:
    """What the worker asks of botocore's session: credentials and the CA bundle."""

    def __init__(self, environment: Environment) -> None:
        self._environment = environment

    async def get_credentials(self) -> StaticCredentials:
        return self._environment.credentials

    def get_config_variable(self, name: str) -> str | None:
        return {"ca_bundle": self._environment.ca_bundle, "region": self._environment.region}.get(
            name
        )


@asynccontextmanager
async def open_lean_clients(
    environment: Environment, *, read_timeout: float, attempts: int
) -> AsyncIterator[Clients]:
    """:class:`Clients` of two :class:`LeanClient`, closed on exit."""
    check_ca_bundle(LeanSession(environment))  # the generic clients' one line, the same
    secure = any(
        url.startswith("https:")
        for url in (environment.kinesis_endpoint, environment.dynamodb_endpoint)
    )
    tls = client_context(environment.ca_bundle) if secure else None
    apis = [
        JsonApi(
            environment.credentials,
            endpoint=endpoint,
            region=environment.region,
            service=service,
            pool=LEAN_POOL,
            read_timeout=read_timeout,
            ssl_context=tls,
        )
        for endpoint, service in (
            (environment.kinesis_endpoint, KINESIS),
            (environment.dynamodb_endpoint, DYNAMODB),
        )
    ]
    kinesis, dynamodb = (
        LeanClient(api, endpoint=url, region=environment.region, attempts=attempts)
        for api, url in zip(
            apis, (environment.kinesis_endpoint, environment.dynamodb_endpoint), strict=True
        )
    )
    try:
        yield Clients(
            kinesis=cast(Any, kinesis),
            dynamodb=cast(Any, dynamodb),
            session=cast(Any, LeanSession(environment)),
        )
    finally:
        for api in apis:
            api.close()
