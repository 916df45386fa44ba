"""The archive's S3 calls on the lean path: HeadBucket (start-up), PutObject (``If-None-Match``,
metadata, SSE-KMS) and HeadObject (an existing segment's end), and for the Lambda handler's
archive, which resumes inside objects, GetObject and ListObjectsV2; SigV4-signed over keep-alive
HTTP/1.1.

Why: a worker with the archive on opened aiobotocore for these three calls, and so for all of
its calls: about 0.6 CPU-s more at start-up than a worker without it, and botocore's request
machinery (serialisers, checksums, event hooks) on every object.

Addressing, as botocore's endpoint rules address the cases taken here (:func:`route_of`):

* an endpoint URL (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``) whose host is an IP
  address: path style, ``{endpoint}/{bucket}/{key}``;
* no endpoint: virtual-hosted, ``https://{bucket}.s3.{region}.amazonaws.com[.cn]/{key}``, for
  a bucket name DNS can carry under TLS (lower-case letters, digits and hyphens, 3 to 63).

Anything else — an endpoint by host name, a bucket name with dots, an access point — keeps the
generic clients, and :func:`route_of` says why. A bucket in another region than the worker's
is followed where S3 says it is (``x-amz-bucket-region`` on a 301, 307 or 400), once, as
botocore's S3 redirector follows it. Requests carry the payload's SHA-256 (signed,
as botocore signs a payload over plain HTTP). Errors are botocore's: a ClientError with S3's
code (from its XML; a HEAD has no body, so its code is the status, ``"404"``, as botocore
gives it), tried again as its standard retry mode does (5xx, ``SlowDown``, a dropped
connection).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
import ssl
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree

from botocore.exceptions import ClientError

from consumer.adapters.http1 import Http1Pool
from consumer.adapters.json_api import Credentials, retried_call
from consumer.adapters.sigv4 import SigV4

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_META = "x-amz-meta-"
S3_POOL = 8  # connections a bucket: segment commits in flight (SEGMENT_CONCURRENCY) at most
_XMLNS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# ListObjectsV2's answer, as botocore's rest-xml parser types it; its other fields are strings
_INTEGERS = ("KeyCount", "MaxKeys", "Size")
_WHEN = "LastModified"
# what botocore URL-decodes of an answer to the encoding-type=url it asks for itself
_ENCODED = ("Delimiter", "Prefix", "StartAfter")


@dataclasses.dataclass(frozen=True)
class Route:
    """Where a bucket's requests go: ``base`` (scheme://host[:port]) and the path before a key
    (``/{bucket}`` in path style, empty when the bucket is in the host name)."""

    base: str
    prefix: str


def route_of(endpoint: str | None, region: str, bucket: str) -> Route | str:
    """The route botocore would take to ``bucket``, or why it must address it itself."""
    if endpoint is not None:
        parts = urlsplit(endpoint)
        scheme, netloc, path, query, _ = parts  # (the IAM test reads ``.query`` as DynamoDB's)
        try:
            ipaddress.ip_address(parts.hostname or "")
        except ValueError:
            return f"S3 endpoint host {parts.hostname!r} is for botocore to address"
        if path.strip("/") or query:
            return f"S3 endpoint {endpoint!r} has a path: for botocore to address"
        return Route(f"{scheme}://{netloc}", "/" + quote(bucket, safe=""))
    if not _BUCKET.match(bucket):
        return f"S3 bucket {bucket!r} is for botocore to address"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return Route(f"https://{bucket}.s3.{region}.{suffix}", "")


def s3_error(status: int, headers: Mapping[str, str], body: bytes, operation: str) -> ClientError:
    """S3's error answer as botocore raises it."""
    code, message = str(status), ""
    if body:
        try:
            root = ElementTree.fromstring(body)
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
        except ElementTree.ParseError:
            message = body[:200].decode(errors="replace")
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": dict(headers)},
    }
    return ClientError(response, operation)


class LeanS3:
    """The archive's S3 calls, named and answered as on botocore's client."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        endpoint: str | None,
        region: str,
        read_timeout: float,
        attempts: int,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._credentials = credentials
        self._endpoint = endpoint
        self._region = region
        self._read_timeout = read_timeout
        self._attempts = attempts
        self._ssl = ssl_context
        self._routes: dict[str, tuple[str, Http1Pool, SigV4, str]] = {}
        self._regions: dict[str, str] = {}  # buckets S3 said are in another region

    async def head_bucket(self, *, Bucket: str) -> dict[str, Any]:
        await self._call("HeadBucket", "HEAD", Bucket, None)
        return {}

    async def head_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        headers, _ = await self._call("HeadObject", "HEAD", Bucket, Key)
        metadata = {k[len(_META) :]: v for k, v in headers.items() if k.startswith(_META)}
        return {"Metadata": metadata, "ContentLength": int(headers.get("content-length", 0))}

    async def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        headers, body = await self._call("GetObject", "GET", Bucket, Key)
        return {
            "Body": ObjectBody(body),
            "ContentLength": len(body),
            "ETag": headers.get("etag", ""),
            "Metadata": {k[len(_META) :]: v for k, v in headers.items() if k.startswith(_META)},
        }

    async def list_objects_v2(
        self,
        *,
        Bucket: str,
        Prefix: str | None = None,
        StartAfter: str | None = None,
        MaxKeys: int | None = None,
        ContinuationToken: str | None = None,
    ) -> dict[str, Any]:
        """One page, as botocore asks for it (keys URL-encoded, decoded in the answer)."""
        query = canonical_query(
            {
                "list-type": "2",
                "encoding-type": "url",
                "prefix": Prefix,
                "start-after": StartAfter,
                "max-keys": None if MaxKeys is None else str(MaxKeys),
                "continuation-token": ContinuationToken,
            }
        )
        _, body = await self._call("ListObjectsV2", "GET", Bucket, None, query=query)
        return objects_listed(body)

    async def put_object(
        self,
        *,
        Bucket: str,
        Key: str,
        Body: bytes,
        IfNoneMatch: str | None = None,
        ContentType: str | None = None,
        Metadata: Mapping[str, str] | None = None,
        ServerSideEncryption: str | None = None,
        SSEKMSKeyId: str | None = None,
    ) -> dict[str, Any]:
        headers = {f"{_META}{name}": value for name, value in (Metadata or {}).items()}
        for name, value in (
            ("If-None-Match", IfNoneMatch),
            ("Content-Type", ContentType),
            ("x-amz-server-side-encryption", ServerSideEncryption),
            ("x-amz-server-side-encryption-aws-kms-key-id", SSEKMSKeyId),
        ):
            if value is not None:
                headers[name] = value
        answer, _ = await self._call("PutObject", "PUT", Bucket, Key, headers, Body)
        return {"ETag": answer.get("etag", "")}

    async def _call(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str | None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        query: str = "",
    ) -> tuple[dict[str, str], bytes]:
        digest = hashlib.sha256(body).hexdigest()
        wanted = {**(headers or {}), "x-amz-content-sha256": digest}
        request = (operation, method, bucket, key, wanted, body, digest, query)
        try:
            return await self._send(*request)
        except ClientError as exc:
            moved = _elsewhere(exc, self._route(bucket)[3])
            if moved is None:
                raise
        self._relocate(bucket, moved)  # once more, in the bucket's own region
        return await self._send(*request)

    async def _send(
        self,
        operation: str,
        method: str,
        bucket: str,
        key: str | None,
        headers: dict[str, str],
        body: bytes,
        digest: str,
        query: str,
    ) -> tuple[dict[str, str], bytes]:
        prefix, pool, signer, _ = self._route(bucket)
        path = prefix + ("/" + quote(key, safe="/~") if key is not None else "") or "/"
        target = f"{path}?{query}" if query else path

        async def once() -> tuple[dict[str, str], bytes]:
            frozen = await self._credentials.get_frozen_credentials()
            signed = signer.headers(
                body, headers, frozen, method=method, path=path, payload_hash=digest, query=query
            )
            status, answer_headers, payload = await pool.request(method, target, signed, body)
            if status >= 300:
                raise s3_error(status, answer_headers, payload, operation)
            return answer_headers, payload

        return await retried_call(once, self._attempts)

    def _route(self, bucket: str) -> tuple[str, Http1Pool, SigV4, str]:
        found = self._routes.get(bucket)
        if found is None:
            region = self._regions.get(bucket, self._region)
            route = route_of(self._endpoint, region, bucket)
            if isinstance(route, str):  # the worker asked route_of before choosing us
                raise ValueError(route)
            pool = Http1Pool(
                route.base + "/",
                size=S3_POOL,
                read_timeout=self._read_timeout,
                ssl_context=self._ssl if route.base.startswith("https:") else None,
            )
            signer = SigV4(route.base, region, "s3")
            found = self._routes[bucket] = (route.prefix, pool, signer, region)
        return found

    def _relocate(self, bucket: str, region: str) -> None:
        """The bucket is in ``region``: its requests go there from now on (as botocore's S3
        redirector sends them, for a bucket outside the client's region)."""
        self._regions[bucket] = region
        _, pool, _, _ = self._routes.pop(bucket)
        pool.close()

    def close(self) -> None:
        for _, pool, _, _ in self._routes.values():
            pool.close()
        self._routes.clear()


class ObjectBody:
    """A GetObject answer's body, read as aiobotocore's streaming body is read here
    (``async with answer["Body"] as body: await body.read()``): the object, already whole (an
    archive's are 8 MiB at most)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def __aenter__(self) -> ObjectBody:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def read(self) -> bytes:
        return self._data


def canonical_query(params: Mapping[str, str | None]) -> str:
    """A query string as botocore's serializer encodes it and SigV4 signs it: the parameters
    given (not None), each name and value percent-encoded but ``-_.~``, sorted."""
    pairs = sorted(
        (quote(name, safe="-_.~"), quote(value, safe="-_.~"))
        for name, value in params.items()
        if value is not None
    )
    return "&".join(f"{name}={value}" for name, value in pairs)


def objects_listed(body: bytes) -> dict[str, Any]:
    """ListObjectsV2's XML answer as botocore gives it: integers and times typed, ``Contents``
    a list (absent when empty), what S3 URL-encoded decoded (encoding-type=url)."""
    root = ElementTree.fromstring(body)
    listed: dict[str, Any] = {}
    contents: list[dict[str, Any]] = []
    for element in root:
        name = element.tag.removeprefix(_XMLNS)
        if name == "Contents":
            contents.append(_fields(element))
        elif len(element) == 0:  # (CommonPrefixes: no Delimiter is asked for here)
            listed[name] = _typed(element)
    if contents:
        listed["Contents"] = contents
    if listed.get("EncodingType") == "url":
        for name in _ENCODED:
            if name in listed:
                listed[name] = unquote_plus(listed[name])
        for item in contents:
            item["Key"] = unquote_plus(item["Key"])
    return listed


def _fields(element: ElementTree.Element) -> dict[str, Any]:
    """An object's fields: ``ChecksumAlgorithm`` a list, as botocore has it; the nested ones
    (``Owner``, ``RestoreStatus``) are not asked for here."""
    fields: dict[str, Any] = {}
    for child in element:
        name = child.tag.removeprefix(_XMLNS)
        if name == "ChecksumAlgorithm":
            fields.setdefault(name, []).append(child.text or "")
        elif len(child) == 0:
            fields[name] = _typed(child)
    return fields


def _typed(element: ElementTree.Element) -> Any:
    name, text = element.tag.removeprefix(_XMLNS), element.text or ""
    if name in _INTEGERS:
        return int(text)
    if name == "IsTruncated":
        return text == "true"
    if name == _WHEN:
        return datetime.fromisoformat(text)
    return text


def _elsewhere(exc: ClientError, region: str) -> str | None:
    """The region S3 says a bucket is in, when it is not ``region`` (a 301, 307 or 400 with
    ``x-amz-bucket-region``), else None."""
    meta: Any = exc.response.get("ResponseMetadata", {})
    found = meta.get("HTTPHeaders", {}).get("x-amz-bucket-region")
    moved = meta.get("HTTPStatusCode") in (301, 307, 400)
    return found if moved and found and found != region else None
