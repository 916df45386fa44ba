"""The alerts' SNS calls on the lean path: Publish and GetTopicAttributes (start-up), in SNS's
query protocol — a form-encoded POST, an XML answer — SigV4-signed over keep-alive HTTP/1.1.

Why: a worker (or the Lambda handler) with alerts on opened aiobotocore for these two calls,
and so for every call but the hot ones: its imports and clients, about 0.3 CPU-s of start-up,
and botocore's request machinery on each alert. The body is the one botocore's query
serializer writes for the same call (the parameters in the order given, a map as
``Name.entry.N.Name`` / ``Name.entry.N.Value.*``), so the signature is too; the answers and
errors are what botocore's query parser makes of them (tests compare both), tried again as its
standard retry mode does.
"""

from __future__ import annotations

import base64
import http.client
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode
from xml.etree import ElementTree

from botocore.exceptions import ClientError

from consumer.adapters.http1 import Http1Pool
from consumer.adapters.json_api import Credentials, retried_call
from consumer.adapters.sigv4 import SigV4

VERSION = "2010-03-31"
CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"
SNS_POOL = 4  # alerts go out a few at a time (their rate is bounded)


def query_body(action: str, params: Mapping[str, Any]) -> bytes:
    """The form body botocore's query serializer writes for ``action`` with ``params``: strings
    as they are, a mapping of message attributes as SNS's ``entry`` list (a binary value
    base64-encoded)."""
    pairs: list[tuple[str, str]] = [("Action", action), ("Version", VERSION)]
    for name, value in params.items():
        if isinstance(value, str):
            pairs.append((name, value))
        elif isinstance(value, Mapping):
            for n, (key, attribute) in enumerate(value.items(), start=1):
                entry = f"{name}.entry.{n}"
                pairs.append((f"{entry}.Name", key))
                for field, given in attribute.items():
                    text = base64.b64encode(given).decode() if isinstance(given, bytes) else given
                    pairs.append((f"{entry}.Value.{field}", text))
        else:
            raise TypeError(f"{action}: {name} is {type(value).__name__}, not sent by the lean SNS")
    return urlencode(pairs).encode()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _entries(element: ElementTree.Element) -> dict[str, str]:
    """A query map (``<entry><key>…</key><value>…</value></entry>``…) as a dict."""
    found: dict[str, str] = {}
    for entry in element:
        fields = {_local(field.tag): field.text or "" for field in entry}
        found[fields.get("key", "")] = fields.get("value", "")
    return found


def answer_of(action: str, body: bytes) -> dict[str, Any]:
    """``{action}Result`` of a query answer as botocore's parser gives it: its fields' texts,
    an ``Attributes`` map as a dict; ``ResponseMetadata`` with the request id."""
    root = ElementTree.fromstring(body)
    parsed: dict[str, Any] = {}
    for element in root:
        name = _local(element.tag)
        if name == f"{action}Result":
            for field in element:
                if _local(field.tag) == "Attributes":
                    parsed["Attributes"] = _entries(field)
                else:
                    parsed[_local(field.tag)] = field.text or ""
        elif name == "ResponseMetadata":
            parsed["ResponseMetadata"] = {_local(field.tag): field.text or "" for field in element}
    return parsed


def sns_error(status: int, headers: Mapping[str, str], body: bytes, operation: str) -> ClientError:
    """SNS's error answer as botocore raises it (a proxy's HTML or empty 5xx: the status)."""
    stripped = body.strip()
    error: dict[str, str] = {"Code": str(status), "Message": http.client.responses.get(status, "")}
    metadata: dict[str, Any] = {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)}
    if stripped and not stripped.startswith(b"<html>"):
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            error = {"Code": str(status), "Message": body[:200].decode(errors="replace")}
        else:
            found = next((e for e in root.iter() if _local(e.tag) == "Error"), None)
            if found is not None:
                error = {_local(field.tag): field.text or "" for field in found}
            request_id = next((e.text for e in root.iter() if _local(e.tag) == "RequestId"), None)
            if request_id:
                metadata["RequestId"] = request_id
    response: Any = {"Error": error, "ResponseMetadata": metadata}
    return ClientError(response, operation)


class LeanSns:
    """The alerts' SNS calls, named and answered as on botocore's client."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        endpoint: str,
        region: str,
        read_timeout: float,
        attempts: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._credentials = credentials
        url = endpoint.rstrip("/") + "/"
        self._pool = Http1Pool(
            url, size=SNS_POOL, read_timeout=read_timeout, ssl_context=ssl_context
        )
        self._signer = SigV4(url, region, "sns")
        self._attempts = attempts

    async def publish(self, **params: Any) -> dict[str, Any]:
        return await self._call("Publish", params)

    async def get_topic_attributes(self, *, TopicArn: str) -> dict[str, Any]:
        return await self._call("GetTopicAttributes", {"TopicArn": TopicArn})

    async def _call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body = query_body(action, params)

        async def once() -> dict[str, Any]:
            frozen = await self._credentials.get_frozen_credentials()
            headers = self._signer.headers(body, {"Content-Type": CONTENT_TYPE}, frozen)
            status, answer_headers, payload = await self._pool.post(body, headers)
            if status >= 300:
                raise sns_error(status, answer_headers, payload, action)
            return answer_of(action, payload)

        return await retried_call(once, self._attempts)

    def close(self) -> None:
        self._pool.close()
