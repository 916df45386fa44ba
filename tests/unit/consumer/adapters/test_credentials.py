"""A container's credentials (consumer.adapters.credentials): read from its endpoint as botocore
reads them, and refreshed in botocore's windows — on a fake clock against scripted fetches,
and against a real HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from botocore.exceptions import CredentialRetrievalError
from structlog.testing import capture_logs

from consumer.adapters import credentials as module
from consumer.adapters.credentials import (
    ADVISORY_S,
    MANDATORY_S,
    RETRY_AFTER_S,
    ContainerSource,
    Frozen,
    RefreshingCredentials,
    container_source,
    fetch_container,
)
from tests.unit.consumer.adapters.local_http import answer, serving

pytestmark = pytest.mark.timeout(20)

SOURCE = ContainerSource("http://169.254.170.2/v2/credentials/x")
HOUR = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """Scripted fetches: each answers the next of ``answers`` (an exception is raised), each
    valid for ``lifetime`` seconds from the clock's reading; ``gate`` holds them."""

    def __init__(self, clock: Clock, lifetime: float = HOUR) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.answers: list[Exception | None] = []
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> tuple[Frozen, float]:
        self.calls += 1
        await self.gate.wait()
        failure = self.answers.pop(0) if self.answers else None
        if failure is not None:
            raise failure
        return Frozen(f"AKID{self.calls}", "secret", "token"), self.clock.now + self.lifetime


async def fetched(lifetime: float = HOUR) -> tuple[Clock, Endpoint, RefreshingCredentials]:
    """Credentials fetched once, on a fake clock, from a scripted endpoint."""
    clock = Clock()
    endpoint = Endpoint(clock, lifetime)
    credentials = RefreshingCredentials(endpoint, "container-role", clock)
    await credentials.get_frozen_credentials()
    return clock, endpoint, credentials


def refused() -> CredentialRetrievalError:
    return CredentialRetrievalError(provider="container-role", error_msg="refused")


async def test_credentials_are_fetched_once_and_used_until_the_advisory_window() -> None:
    clock, endpoint, credentials = await fetched()
    first = await credentials.get_frozen_credentials()
    clock.now += HOUR - ADVISORY_S - 1
    assert await credentials.get_frozen_credentials() == first
    assert tuple(first) == ("AKID1", "secret", "token")
    assert endpoint.calls == 1


async def test_in_the_advisory_window_one_caller_refreshes_and_none_waits() -> None:
    clock, endpoint, credentials = await fetched()
    clock.now += HOUR - ADVISORY_S + 1
    endpoint.gate.clear()  # the refresh hangs: callers still sign with what they have
    found = [await credentials.get_frozen_credentials() for _ in range(5)]
    assert {f.access_key for f in found} == {"AKID1"}
    await asyncio.sleep(0)
    assert endpoint.calls == 2, "one refresh for five callers"
    endpoint.gate.set()
    await asyncio.sleep(0.01)
    assert (await credentials.get_frozen_credentials()).access_key == "AKID2"


async def test_a_failed_advisory_refresh_keeps_the_credentials_and_is_tried_again_later() -> None:
    clock, endpoint, credentials = await fetched()
    clock.now += HOUR - ADVISORY_S + 1
    endpoint.answers = [refused()]
    with capture_logs() as logs:
        assert (await credentials.get_frozen_credentials()).access_key == "AKID1"
        await asyncio.sleep(0.01)
    assert [e["event"] for e in logs] == ["credentials_refresh_failed"]
    assert (await credentials.get_frozen_credentials()).access_key == "AKID1"
    await asyncio.sleep(0.01)
    assert endpoint.calls == 2, "not again before RETRY_AFTER_S"
    clock.now += RETRY_AFTER_S
    await credentials.get_frozen_credentials()
    await asyncio.sleep(0.01)
    assert endpoint.calls == 3
    assert (await credentials.get_frozen_credentials()).access_key == "AKID3"


async def test_in_the_mandatory_window_callers_wait_and_a_failure_raises() -> None:
    clock, endpoint, credentials = await fetched()
    clock.now += HOUR - MANDATORY_S + 1
    endpoint.answers = [refused()]
    with pytest.raises(CredentialRetrievalError):
        await credentials.get_frozen_credentials()
    waiting = [asyncio.create_task(credentials.get_frozen_credentials()) for _ in range(3)]
    found = await asyncio.gather(*waiting)
    assert {f.access_key for f in found} == {"AKID3"}, "three waiters, one fetch"
    assert endpoint.calls == 3


async def test_expired_credentials_from_the_endpoint_raise() -> None:
    clock = Clock()
    credentials = RefreshingCredentials(Endpoint(clock, lifetime=-1), "container-role", clock)
    with pytest.raises(CredentialRetrievalError, match="expired"):
        await credentials.get_frozen_credentials()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        (
            {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/abc"},
            ContainerSource("http://169.254.170.2/v2/credentials/abc"),
        ),
        (
            {  # the relative URI wins; the token file wins over the token
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/r",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/f",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "/var/token",
            },
            ContainerSource("http://169.254.170.2/r", None, "/var/token"),
        ),
        (
            {
                "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://169.254.170.23/v1/credentials",
                "AWS_CONTAINER_AUTHORIZATION_TOKEN": "t",
            },
            ContainerSource("http://169.254.170.23/v1/credentials", "t"),
        ),
        (
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "https://creds.example.com/x"},
            ContainerSource("https://creds.example.com/x"),
        ),
        (
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://[::1]:8080/x"},
            ContainerSource("http://[::1]:8080/x"),
        ),
        (
            {"AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://creds.example.com/x"},
            "AWS_CONTAINER_CREDENTIALS_FULL_URI host 'creds.example.com' is for botocore to refuse",
        ),
    ],
)
def test_the_endpoint_is_read_from_the_environment_as_botocore_reads_it(
    env: dict[str, str], expected: ContainerSource | str | None
) -> None:
    assert container_source(env) == expected


class Server:
    """A credentials endpoint on 127.0.0.1: answers ``statuses`` in turn (then 200), and
    records each request's head."""

    def __init__(self, statuses: list[int], body: bytes | None = None) -> None:
        self.statuses = statuses
        self.heads: list[str] = []
        expiry = datetime.fromtimestamp(4_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = {"AccessKeyId": "AK", "SecretAccessKey": "SK", "Token": "T", "Expiration": expiry}
        self.body = body if body is not None else orjson.dumps(answer)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head.decode())
        status = self.statuses.pop(0) if self.statuses else 200
        await answer(writer, status, self.body if status == 200 else b"no")


@asynccontextmanager
async def endpoint_of(server: Server) -> AsyncIterator[str]:
    async with serving(server.handle) as base:
        yield f"{base}/v1/credentials?id=1"


@pytest.fixture
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ATTEMPT_PAUSE_S", 0.0)


def header(head: str, name: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.lower() == name.lower():
            return value.strip()
    return None


async def test_a_fetch_sends_the_token_from_its_file_each_time(tmp_path: Path) -> None:
    server = Server([])
    token = tmp_path / "token"
    async with endpoint_of(server) as url:
        source = ContainerSource(url, None, str(token))
        token.write_text("first")
        frozen, expiry = await fetch_container(source)
        token.write_text("second")  # the agent rotated it
        await fetch_container(source)
    assert frozen == ("AK", "SK", "T") and expiry == 4_000_000_000
    assert [h.split("\r\n")[0] for h in server.heads] == ["GET /v1/credentials?id=1 HTTP/1.1"] * 2
    assert [header(h, "Authorization") for h in server.heads] == ["first", "second"]
    assert header(server.heads[0], "Host") == url.split("/")[2]


async def test_a_fetch_is_tried_three_times(no_pause: None) -> None:
    server = Server([500, 503])
    async with endpoint_of(server) as url:
        assert (await fetch_container(ContainerSource(url)))[0].access_key == "AK"
    failing = Server([500, 500, 500])
    async with endpoint_of(failing) as url:
        with pytest.raises(CredentialRetrievalError, match="HTTP 500"):
            await fetch_container(ContainerSource(url))
    assert len(failing.heads) == 3


@pytest.mark.parametrize(
    ("body", "token"),
    [(b"not json", None), (b'{"AccessKeyId": "AK"}', None), (None, "bad\r\nvalue")],
)
async def test_what_is_not_credentials_raises_one_error(
    body: bytes | None, token: str | None
) -> None:
    async with endpoint_of(Server([], body)) as url:
        with pytest.raises(CredentialRetrievalError):
            await fetch_container(ContainerSource(url, token))


async def test_an_unreachable_endpoint_raises_a_credentials_error(no_pause: None) -> None:
    async with endpoint_of(Server([])) as url:
        pass  # closed: nothing listens there any more
    with pytest.raises(CredentialRetrievalError, match=r"127\.0\.0\.1"):
        await fetch_container(ContainerSource(url))
