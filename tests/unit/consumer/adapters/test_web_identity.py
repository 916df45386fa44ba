"""A web identity exchanged with STS (consumer.adapters.web_identity): the request botocore
would send, its answers and errors, against a real HTTP endpoint on 127.0.0.1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from botocore.exceptions import CredentialRetrievalError

from consumer.adapters import credentials
from consumer.adapters.web_identity import (
    WebIdentitySource,
    fetch_web_identity,
    web_identity_source,
)
from tests.unit.consumer.adapters.local_http import answer, serving

pytestmark = pytest.mark.timeout(20)

ANSWER = b"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIA1</AccessKeyId>
      <SecretAccessKey>secret1</SecretAccessKey>
      <SessionToken>session1</SessionToken>
      <Expiration>2096-10-02T07:06:40Z</Expiration>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"""


def error(code: str) -> bytes:
    return (
        b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
        b"<Type>Sender</Type><Code>%s</Code><Message>no</Message></Error></ErrorResponse>"
        % code.encode()
    )


class Sts:
    """STS on 127.0.0.1: answers ``script`` in turn ((status, body)), then ANSWER; records
    each request's form."""

    def __init__(self, script: list[tuple[int, bytes]]) -> None:
        self.script = script
        self.forms: list[dict[str, list[str]]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = next(
            int(line.split(":", 1)[1])
            for line in head.split("\r\n")
            if line.lower().startswith("content-length:")
        )
        self.forms.append(parse_qs((await reader.readexactly(length)).decode()))
        status, body = self.script.pop(0) if self.script else (200, ANSWER)
        await answer(writer, status, body)


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credentials, "ATTEMPT_PAUSE_S", 0.0)  # the attempts' loop is there


def source(url: str, token: Path, session: str | None = None) -> WebIdentitySource:
    return WebIdentitySource("arn:aws:iam::123456789012:role/telemax", str(token), session, url)


async def test_the_token_is_exchanged_as_botocore_exchanges_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    sts = Sts([])
    async with serving(sts.handle) as url:
        token.write_text("jwt-1")
        frozen, expiry = await fetch_web_identity(source(url, token))
        token.write_text("jwt-2")  # the kubelet rotated it
        await fetch_web_identity(source(url, token, "pod-7"))
    assert frozen == ("ASIA1", "secret1", "session1")
    assert expiry == 4_000_000_000
    first, second = sts.forms
    assert first["Action"] == ["AssumeRoleWithWebIdentity"]
    assert first["Version"] == ["2011-06-15"]
    assert first["RoleArn"] == ["arn:aws:iam::123456789012:role/telemax"]
    assert first["WebIdentityToken"] == ["jwt-1"]
    assert first["RoleSessionName"][0].startswith("botocore-session-")
    assert second["WebIdentityToken"] == ["jwt-2"]
    assert second["RoleSessionName"] == ["pod-7"]


@pytest.mark.parametrize(
    ("script", "requests", "outcome"),
    [
        ([(500, b"oops"), (503, error("ServiceUnavailable"))], 3, "ASIA1"),
        ([(400, error("IDPCommunicationError"))], 2, "ASIA1"),
        ([(400, error("InvalidIdentityToken"))], 1, "InvalidIdentityToken"),
        ([(500, b"")] * 3, 3, "500"),
        ([(200, b"<not/>")], 1, "not credentials"),
    ],
)
async def test_failures_are_tried_again_as_botocore_tries_them(
    tmp_path: Path, script: list[tuple[int, bytes]], requests: int, outcome: str
) -> None:
    token = tmp_path / "token"
    token.write_text("jwt")
    sts = Sts(list(script))
    async with serving(sts.handle) as url:
        if outcome == "ASIA1":
            frozen, _ = await fetch_web_identity(source(url, token))
            assert frozen.access_key == "ASIA1"
        else:
            with pytest.raises(CredentialRetrievalError, match=outcome):
                await fetch_web_identity(source(url, token))
    assert len(sts.forms) == requests


async def test_a_missing_token_file_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(CredentialRetrievalError, match="web identity token"):
        await fetch_web_identity(source("http://127.0.0.1:1", tmp_path / "absent"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"AWS_ROLE_ARN": "arn:role"}, None),
        (
            {"AWS_WEB_IDENTITY_TOKEN_FILE": "/t"},
            "AWS_WEB_IDENTITY_TOKEN_FILE without AWS_ROLE_ARN is for botocore to refuse",
        ),
        (
            {
                "AWS_WEB_IDENTITY_TOKEN_FILE": "/t",
                "AWS_ROLE_ARN": "arn:role",
                "AWS_ROLE_SESSION_NAME": "s",
            },
            WebIdentitySource("arn:role", "/t", "s", "https://sts.cn-north-1.amazonaws.com.cn"),
        ),
    ],
)
def test_the_web_identity_is_read_from_the_environment_as_botocore_reads_it(
    env: dict[str, str], expected: WebIdentitySource | str | None
) -> None:
    assert web_identity_source(env, "cn-north-1", None) == expected
