"""Signed JSON-protocol calls to one AWS service (Kinesis, DynamoDB, SQS) over a keep-alive
HTTP/1.1 pool: the body signed as botocore's SigV4 signer signs it (consumer.adapters.sigv4),
the answer parsed with orjson, and an error answer made the ``ClientError`` botocore's JSON
parser makes of it, so the callers' retry, fencing and metrics cannot tell the two apart. A
call is three steps — :meth:`JsonApi.credentials`, :meth:`JsonApi.framed`, :meth:`JsonApi.send`
— so that a request can be framed and signed ahead of the moment it is sent
(consumer.adapters.fastpath's ``PreparedWrite``). :func:`retried_call` tries a call again as
botocore's "standard" retry mode does (the lease tables' item calls, S3's).
"""

from __future__ import annotations

import binascii
import http.client
import ssl
import zlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
from botocore.exceptions import ClientError, ConnectionClosedError, NoCredentialsError

from consumer.adapters.http1 import Http1Pool
from consumer.adapters.sigv4 import SigV4
from kernel.aws import classify
from kernel.backoff import Backoff
from kernel.errors import Action

if TYPE_CHECKING:
    from botocore.credentials import ReadOnlyCredentials

T = TypeVar("T")


class Credentials(Protocol):
    """aiobotocore's refreshable credentials, or consumer.adapters.lean's static ones."""

    async def get_frozen_credentials(self) -> ReadOnlyCredentials: ...


KINESIS = ("kinesis", "Kinesis_20131202", "application/x-amz-json-1.1")
DYNAMODB = ("dynamodb", "DynamoDB_20120810", "application/x-amz-json-1.0")
SQS = ("sqs", "AmazonSQS", "application/x-amz-json-1.0")


def json_default(value: Any) -> str | float:
    """orjson hook: binary values travel base64-encoded and timestamps as epoch seconds, as
    the JSON protocol wants."""
    if isinstance(value, bytes | bytearray | memoryview):
        return binascii.b2a_base64(value, newline=False).decode()
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"cannot encode {type(value).__name__}")


def error_from(status: int, headers: Mapping[str, str], body: bytes, operation: str) -> ClientError:
    """The ClientError botocore's JSON parser makes of an error answer (``headers`` lower-cased,
    as :mod:`consumer.adapters.http1` gives them)."""
    stripped = body.strip()
    if status >= 500 and (not stripped or stripped.startswith(b"<html>")):  # a proxy's, say
        error = {"Code": str(status), "Message": http.client.responses.get(status, "")}
    else:
        error = _protocol_error(status, headers, body)
    response: Any = {
        "Error": error,
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": dict(headers),
            "RequestId": headers.get("x-amzn-requestid", ""),
            "RetryAttempts": 0,
        },
    }
    return ClientError(response, operation)


def _protocol_error(status: int, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    try:
        parsed = orjson.loads(body) if body else {}
        if not isinstance(parsed, dict):
            parsed = {"message": str(parsed)}
    except orjson.JSONDecodeError:
        parsed = {"message": body.decode(errors="replace")}
    code = str(parsed.get("__type") or status)
    code = code.split(":", 1)[0].rsplit("#", 1)[-1]
    error = {"Code": code, "Message": parsed.get("message", parsed.get("Message", ""))}
    # a service that spoke the query protocol before (SQS) names the error as it did there,
    # and botocore takes that name as the code ("AWS.SimpleQueueService.NonExistentQueue")
    query_error = headers.get("x-amzn-query-error", "").split(";")
    if len(query_error) == 2 and query_error[0]:
        error.update(Code=query_error[0], QueryErrorCode=code, Type=query_error[1])
    return error


class JsonApi:
    """Signed JSON-protocol calls to one AWS service over a keep-alive connection pool."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        endpoint: str,
        region: str,
        service: tuple[str, str, str],
        pool: int,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._credentials = credentials
        url = endpoint.rstrip("/") + "/"
        self._pool = Http1Pool(url, size=pool, read_timeout=read_timeout, ssl_context=ssl_context)
        self.signing_name, self._target_prefix, self._content_type = service
        self._check_crc = self.signing_name == "dynamodb"  # DynamoDB sends x-amz-crc32
        self._signer = SigV4(url, region, self.signing_name)

    async def call(self, operation: str, body: bytes) -> Any:
        return await self.send(operation, self.framed(operation, body, await self.credentials()))

    async def credentials(self) -> ReadOnlyCredentials:
        """The credentials to sign with now (refreshed by the session when due)."""
        frozen = await self._credentials.get_frozen_credentials()
        if frozen.access_key is None:
            raise NoCredentialsError()
        return frozen

    def framed(self, operation: str, body: bytes, credentials: ReadOnlyCredentials) -> bytes:
        """``operation`` with ``body``, signed now, as it goes on the wire (for :meth:`send`)."""
        headers = {
            "Content-Type": self._content_type,
            "X-Amz-Target": f"{self._target_prefix}.{operation}",
        }
        return self._pool.framed(body, self._signer.headers(body, headers, credentials))

    async def send(self, operation: str, request: bytes) -> Any:
        """Send a request :meth:`framed` made; its answer parsed, or the error it carries."""
        status, answer_headers, payload = await self._pool.send(request)
        if status != 200:
            raise error_from(status, answer_headers, payload, operation)
        crc = answer_headers.get("x-amz-crc32") if self._check_crc else None
        if crc is not None and zlib.crc32(payload) != int(crc):  # as botocore: retried
            raise ConnectionClosedError(endpoint_url=self._pool.url, error="CRC32 mismatch")
        return orjson.loads(payload)

    def close(self) -> None:
        self._pool.close()


async def retried_call(call: Callable[[], Awaitable[T]], attempts: int) -> T:
    """``call()`` tried up to ``attempts`` times as botocore's "standard" retry mode does:
    throttling, 5xx and dropped connections again after a full-jitter backoff from 1 s."""
    backoff = Backoff(base=1.0, cap=20.0)
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if attempt == attempts or classify(exc) is not Action.RETRY:
                raise
        await backoff.sleep()
    raise AssertionError("unreachable")  # pragma: no cover
