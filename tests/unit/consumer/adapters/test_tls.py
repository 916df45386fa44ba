"""TLS on the lean paths trusts what botocore trusts: AWS_CA_BUNDLE's roots when set, its
default roots otherwise. A local HTTPS server with a certificate from a throw-away CA: the
HTTP/1.1 pool and the HTTP/2 connection (ALPN h2) reach it with that CA, refuse it without."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from consumer.adapters.http1 import Http1Pool
from consumer.adapters.tls import client_context
from consumer.fanout.http2 import Http2Connection, Http2Error
from consumer.testing.fanout import Answer, Request, ScriptedHttp2Server
from devkit.certs import Certificates, make_certificates
from kernel.errors import ConfigError

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def server_context(certs: Certificates, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    context.set_alpn_protocols(alpn)
    return context


def test_the_default_verifies_certificates_and_host_names() -> None:
    context = client_context()
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) > 50  # botocore's default roots (certifi's)


def test_a_bundle_is_the_roots_trusted(certs: Certificates) -> None:
    subjects = [cert["subject"] for cert in client_context(str(certs.ca)).get_ca_certs()]
    assert subjects == [((("commonName", "telemax test CA"),),)]
    assert client_context(str(certs.ca.parent)).verify_mode is ssl.CERT_REQUIRED  # a folder


def test_a_bundle_that_cannot_be_read_is_one_configuration_line(tmp_path: Path) -> None:
    garbage = tmp_path / "bundle.pem"
    garbage.write_text("not a certificate\n")
    for path in (garbage, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match="AWS_CA_BUNDLE") as raised:
            client_context(str(path))
        assert "\n" not in str(raised.value)


@pytest.fixture
async def https_server(certs: Certificates) -> AsyncIterator[str]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client refused our certificate
        finally:
            writer.close()

    server = await asyncio.start_server(
        answer, "127.0.0.1", 0, ssl=server_context(certs, ["http/1.1"])
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()


async def test_http1_reaches_a_server_of_the_bundle_and_refuses_it_without(
    certs: Certificates, https_server: str
) -> None:
    trusting = Http1Pool(https_server, size=1, ssl_context=client_context(str(certs.ca)))
    try:
        status, _, body = await trusting.post(b"{}", {"Host": "127.0.0.1"})
        assert (status, body) == (200, b"{}")
    finally:
        trusting.close()
    default = Http1Pool(https_server, size=1)
    with pytest.raises(EndpointConnectionError) as refused:
        await default.post(b"{}", {"Host": "127.0.0.1"})
    assert isinstance(refused.value.kwargs["error"], ssl.SSLCertVerificationError)


async def respond_ok(request: Request, answer: Answer) -> None:
    answer.respond()
    await answer.send(b"ok", end=True)


async def test_http2_negotiates_h2_by_alpn_with_the_bundle(certs: Certificates) -> None:
    async with ScriptedHttp2Server(respond_ok, tls=server_context(certs, ["h2"])) as server:
        assert server.url.startswith("https://")
        connection = await Http2Connection.open(
            server.url, ssl_context=client_context(str(certs.ca))
        )
        try:
            stream = await connection.post("/", [], b"{}")
            assert await stream.response() == 200
        finally:
            await connection.aclose()
        with pytest.raises(ssl.SSLCertVerificationError):
            await Http2Connection.open(server.url, ssl_context=client_context())


async def test_http2_refuses_a_server_that_does_not_agree_to_h2(certs: Certificates) -> None:
    only_http1 = server_context(certs, ["http/1.1"])
    async with ScriptedHttp2Server(respond_ok, tls=only_http1) as server:
        with pytest.raises(Http2Error, match="does not speak HTTP/2"):
            await Http2Connection.open(server.url, ssl_context=client_context(str(certs.ca)))
