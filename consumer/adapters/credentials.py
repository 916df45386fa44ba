"""Credentials for the lean start: static ones from the environment, a container's
credentials endpoint (an ECS task role, EKS Pod Identity) or a web identity token exchanged
with STS (IRSA on EKS), the last two refreshed before they expire.

The container endpoint is read as botocore reads it (``ContainerProvider``): the URL is
``http://169.254.170.2`` + ``AWS_CONTAINER_CREDENTIALS_RELATIVE_URI``, else
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` (https, a loopback address or one of the container
hosts); the ``Authorization`` header is the content of ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE``
(read at every fetch: the agent rotates it), else ``AWS_CONTAINER_AUTHORIZATION_TOKEN``; the
answer is JSON with ``AccessKeyId``, ``SecretAccessKey``, ``Token`` and ``Expiration``; each
fetch is tried three times, a second apart, two seconds each.

A web identity is read as botocore reads it from the environment
(``AssumeRoleWithWebIdentityProvider``): ``AWS_WEB_IDENTITY_TOKEN_FILE`` and ``AWS_ROLE_ARN``
(``AWS_ROLE_SESSION_NAME``, else ``botocore-session-{epoch seconds}``), the token read at each
exchange, an unsigned ``AssumeRoleWithWebIdentity`` to STS' regional endpoint (or
``AWS_ENDPOINT_URL_STS``/``AWS_ENDPOINT_URL``), tried again on 5xx, throttling,
``IDPCommunicationError`` and dropped connections.

Refreshing follows botocore's windows: from 15 minutes before the expiry one caller fetches
new credentials while the others sign with the current ones, and a failed fetch leaves them
in use (logged, tried again after ``RETRY_AFTER_S``); from 10 minutes before, every caller
waits for new ones and a failure raises. Time is a parameter (``clock``: epoch seconds).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, cast
from urllib.parse import urlsplit

import orjson
from botocore.exceptions import CredentialRetrievalError

from consumer.adapters.http1 import Http1Pool
from kernel.logs import get as get_logger

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

CONTAINER_HOST = "169.254.170.2"  # ECS' credentials endpoint for a relative URI
_ALLOWED_HOSTS = frozenset({CONTAINER_HOST, "169.254.170.23", "fd00:ec2::23", "localhost"})
ADVISORY_S = 15 * 60  # from this long before the expiry, one caller refreshes
MANDATORY_S = 10 * 60  # from this long before, every caller waits for new credentials
RETRY_AFTER_S = 10.0  # after a failed refresh in the advisory window
ATTEMPTS, ATTEMPT_TIMEOUT_S, ATTEMPT_PAUSE_S = 3, 2.0, 1.0  # botocore's, per fetch
PROVIDER = "container-role"  # botocore's name for it, in errors


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
class ContainerSource:
    """Where a container's credentials come from (nothing fetched yet)."""

    url: str
    token: str | None = None
    token_file: str | None = None

    def headers(self) -> dict[str, str]:
        token = Path(self.token_file).read_text() if self.token_file else self.token
        if token is None:
            return {"Accept": "application/json"}
        if "\r" in token or "\n" in token:
            raise CredentialRetrievalError(
                provider=PROVIDER, error_msg="the authorization token is not a legal header value"
            )
        return {"Accept": "application/json", "Authorization": token}


def container_source(env: Mapping[str, str]) -> ContainerSource | str | None:
    """The container endpoint ``env`` names (None: none; a string: why botocore must resolve
    it), as botocore's ContainerProvider reads it."""
    relative = env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
    full = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
    if relative is not None:
        url = f"http://{CONTAINER_HOST}{relative}"
    elif full is not None:
        parts = urlsplit(full)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https"):
            return f"AWS_CONTAINER_CREDENTIALS_FULL_URI {full!r} is for botocore to refuse"
        if parts.scheme == "http" and not (_loopback(host) or host in _ALLOWED_HOSTS):
            return f"AWS_CONTAINER_CREDENTIALS_FULL_URI host {host!r} is for botocore to refuse"
        url = full
    else:
        return None
    token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
    token = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
    return ContainerSource(url, None if token_file is not None else token, token_file)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


Fetch = Callable[[], Awaitable[tuple[Frozen, float]]]  # credentials and their expiry (epoch s)


async def fetch_container(source: ContainerSource) -> tuple[Frozen, float]:
    """One fetch (its attempts included): the credentials and their expiry (epoch s)."""

    async def attempt() -> tuple[int, bytes]:
        pool = Http1Pool(
            source.url, size=1, connect_timeout=ATTEMPT_TIMEOUT_S, read_timeout=ATTEMPT_TIMEOUT_S
        )
        try:
            status, _, body = await pool.get(source.headers())
        finally:
            pool.close()
        return status, body

    def refused(status: int, body: bytes) -> tuple[str, bool]:
        return f"HTTP {status}: {body[:200].decode(errors='replace')}", True

    body = await with_attempts(attempt, refused, PROVIDER, f"{source.url}: ")
    return parse_answer(body)


# (status, body) of an answer that is not 200 -> (what went wrong, whether to try again)
Verdict = Callable[[int, bytes], tuple[str, bool]]


async def with_attempts(
    attempt: Callable[[], Awaitable[tuple[int, bytes]]],
    verdict: Verdict,
    provider: str,
    where: str = "",
) -> bytes:
    """The body of the first 200 among ``ATTEMPTS`` attempts ``ATTEMPT_PAUSE_S`` apart: a
    failed request (unreachable, reset, timed out) is tried again, another answer as
    ``verdict`` says; else CredentialRetrievalError, which an attempt may raise itself."""
    last = ""
    for tried in range(ATTEMPTS):
        if tried:
            await asyncio.sleep(ATTEMPT_PAUSE_S)
        try:
            status, body = await attempt()
        except CredentialRetrievalError:
            raise
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
            continue
        if status == 200:
            return body
        last, again = verdict(status, body)
        if not again:
            break
    raise CredentialRetrievalError(provider=provider, error_msg=f"{where}{last}")


def parse_answer(body: bytes) -> tuple[Frozen, float]:
    try:
        answer = orjson.loads(body)
        frozen = Frozen(answer["AccessKeyId"], answer["SecretAccessKey"], answer.get("Token"))
        expiry = datetime.fromisoformat(answer["Expiration"]).timestamp()
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialRetrievalError(
            provider=PROVIDER, error_msg=f"not credentials: {type(exc).__name__}: {exc}"
        ) from None
    return frozen, expiry


class RefreshingCredentials:
    """Credentials ``fetch`` gives, fetched when first asked for and refreshed before they
    expire; ``provider`` names them in errors and logs (botocore's name)."""

    def __init__(self, fetch: Fetch, provider: str, clock: Callable[[], float] = time.time) -> None:
        self.provider = provider
        self._fetch = fetch
        self._clock = clock
        self._frozen: Frozen | None = None
        self._expiry = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._not_before = 0.0  # no advisory refresh before this (after a failed one)

    async def get_frozen_credentials(self) -> ReadOnlyCredentials:
        now = self._clock()
        advisory = now >= self._expiry - ADVISORY_S and now >= self._not_before
        if self._frozen is None or now >= self._expiry - MANDATORY_S:
            await self._refresh()  # every caller waits; a failure raises
        elif advisory and self._refreshing is None:
            # one caller starts a refresh; everyone signs with the current ones meanwhile
            self._refreshing = asyncio.create_task(self._advisory())
        assert self._frozen is not None
        return cast("ReadOnlyCredentials", self._frozen)

    async def _refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._fetch_now())
        task = self._refreshing
        await asyncio.shield(task)  # a cancelled caller leaves the fetch to the others
        if self._frozen is None or self._clock() >= self._expiry:
            raise CredentialRetrievalError(
                provider=self.provider, error_msg="the source gave expired credentials"
            )

    async def _fetch_now(self) -> None:
        try:
            self._frozen, self._expiry = await self._fetch()
        finally:
            self._refreshing = None

    async def _advisory(self) -> None:
        try:
            await self._fetch_now()
        except Exception as exc:  # still valid for a while: keep them, say so, try later
            self._not_before = self._clock() + RETRY_AFTER_S
            get_logger().warning(
                "credentials_refresh_failed", provider=self.provider, error=str(exc)[:300]
            )

    def close(self) -> None:
        """Cancel a refresh in flight (the clients are closing)."""
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None
