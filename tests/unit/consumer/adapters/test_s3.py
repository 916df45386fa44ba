"""The archive's S3 calls on the lean path (consumer.adapters.s3): where botocore would send
them, signed as botocore signs them, their answers and S3's errors as botocore gives them."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import botocore.session
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.handlers import decode_list_object_v2
from botocore.parsers import create_parser

from consumer.adapters.credentials import Frozen, StaticCredentials
from consumer.adapters.s3 import (
    LeanS3,
    Route,
    canonical_query,
    objects_listed,
    route_of,
    s3_error,
)
from consumer.adapters.sigv4 import SigV4
from kernel.aws import classify, error_code
from kernel.errors import Action
from tests.unit.consumer.adapters.botocore_requests import SECRET, botocores_request
from tests.unit.consumer.adapters.local_http import answer, serving


@pytest.mark.parametrize(
    ("endpoint", "region", "bucket", "expected"),
    [
        (
            None,
            "eu-west-1",
            "telemax-archive",
            Route("https://telemax-archive.s3.eu-west-1.amazonaws.com", ""),
        ),
        (None, "cn-north-1", "abc", Route("https://abc.s3.cn-north-1.amazonaws.com.cn", "")),
        ("http://127.0.0.1:5000", "us-east-1", "b1", Route("http://127.0.0.1:5000", "/b1")),
        ("http://[::1]:9000/", "us-east-1", "my.bucket", Route("http://[::1]:9000", "/my.bucket")),
        (
            "http://minio.local:9000",
            "us-east-1",
            "b1",
            "S3 endpoint host 'minio.local' is for botocore to address",
        ),
        (
            "http://10.0.0.1/s3",
            "us-east-1",
            "b1",
            "S3 endpoint 'http://10.0.0.1/s3' has a path: for botocore to address",
        ),
        (None, "eu-west-1", "my.bucket", "S3 bucket 'my.bucket' is for botocore to address"),
        (None, "eu-west-1", "Upper", "S3 bucket 'Upper' is for botocore to address"),
    ],
)
def test_buckets_are_addressed_as_botocore_addresses_them_or_left_to_it(
    endpoint: str | None, region: str, bucket: str, expected: Route | str
) -> None:
    assert route_of(endpoint, region, bucket) == expected


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE"])
@pytest.mark.parametrize(
    "key",
    ["shop/records/feed=orders/dt=2026-12-04/hour=15/shardId-000000000001-0001.json.gz", "a b/c~d"],
)
def test_a_put_is_signed_byte_for_byte_as_botocore_signs_it(key: str, token: str | None) -> None:
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", SECRET, token)
    base, path = "http://127.0.0.1:5000", "/telemax-archive/" + quote(key, safe="/~")
    body = b"\x1f\x8b gzip bytes"
    headers = {
        "If-None-Match": "*",
        "Content-Type": "application/x-ndjson",
        "x-amz-meta-last-sequence": "4963",
        "x-amz-server-side-encryption": "aws:kms",
    }
    request = AWSRequest(method="PUT", url=base + path, data=body, headers=dict(headers))
    S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
    theirs = dict(request.headers.items())
    digest = theirs["X-Amz-Content-SHA256"]
    ours = SigV4(base, "eu-west-1", "s3").headers(
        body,
        {**headers, "x-amz-content-sha256": digest},
        credentials,
        theirs["X-Amz-Date"],
        method="PUT",
        path=path,
        payload_hash=digest,
    )
    assert ours["Authorization"] == theirs["Authorization"]


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE"])
def test_a_listing_is_asked_for_and_signed_as_botocore_asks_and_signs(token: str | None) -> None:
    prefix = "records/feed=telemax/dt=2026-12-07/hour=04/shardId-000000000001~upto a+b é-"
    after = prefix + "4963"
    params = {"Prefix": prefix, "StartAfter": after, "MaxKeys": 1}
    theirs = botocores_request("s3", "ListObjectsV2", token, Bucket="telemax-archive", **params)
    query = canonical_query(
        {
            "list-type": "2",
            "encoding-type": "url",
            "prefix": prefix,
            "start-after": after,
            "max-keys": "1",
        }
    )
    url = urlsplit(theirs.url)
    assert url.path == "/telemax-archive"
    assert sorted(parse_qsl(url.query)) == parse_qsl(query), "the same parameters, encoded so"
    sent: Any = theirs.headers  # (bytes values, as botocore signs them)
    headers = {k: v.decode() for k, v in sent.items()}
    ours = SigV4("http://127.0.0.1:5000", "eu-west-1", "s3").headers(
        b"",
        {"x-amz-content-sha256": headers["X-Amz-Content-SHA256"]},
        ReadOnlyCredentials("AKIDEXAMPLE", SECRET, token),
        headers["X-Amz-Date"],
        method="GET",
        path="/telemax-archive",
        payload_hash=headers["X-Amz-Content-SHA256"],
        query=query,
    )
    assert ours["Authorization"] == headers["Authorization"]


def test_an_objects_key_is_fetched_where_botocore_fetches_it() -> None:
    key = "records/feed=telemax/dt=2026-12-07/hour=04/a b~c.json.gz"
    theirs = botocores_request("s3", "GetObject", None, Bucket="telemax-archive", Key=key)
    assert urlsplit(theirs.url).path == "/telemax-archive/" + quote(key, safe="/~")


LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>telemax-archive</Name>
<Prefix>records%2Ffeed%3Dtelemax%2Fa+b</Prefix><StartAfter>records%2Fx</StartAfter>
<KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><EncodingType>url</EncodingType>
<IsTruncated>true</IsTruncated><NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
<Contents><Key>records%2Ffeed%3Dtelemax%2Fa+b%2F49%7E1.json.gz</Key>
<LastModified>2026-12-07T04:01:02.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag>
<ChecksumAlgorithm>CRC64NVME</ChecksumAlgorithm><Size>2048</Size><StorageClass>STANDARD</StorageClass></Contents>
<Contents><Key>records%2Fz</Key><LastModified>2026-12-07T04:01:03.500Z</LastModified>
<ETag>&quot;x&quot;</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>
</ListBucketResult>"""
EMPTY = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p</Prefix>
<KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>
</ListBucketResult>"""


@pytest.mark.parametrize("body", [LISTING, EMPTY], ids=["two-keys", "empty"])
def test_a_listing_reads_as_botocores(body: bytes) -> None:
    model = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("ListObjectsV2").output_shape
    parser: Any = create_parser("rest-xml")
    theirs = parser.parse({"status_code": 200, "headers": {}, "body": body}, shape)
    decode_list_object_v2(theirs, context={"encoding_type_auto_set": True})
    theirs.pop("ResponseMetadata")
    assert objects_listed(body) == theirs


def test_s3_errors_read_as_botocores() -> None:
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code>'
        b"<Message>At least one of the pre-conditions you specified did not hold</Message></Error>"
    )
    exists = s3_error(412, {}, body, "PutObject")
    assert error_code(exists) == "PreconditionFailed"
    assert "pre-conditions" in str(exists)
    assert classify(exists) is Action.GIVE_UP
    missing = s3_error(404, {}, b"", "HeadObject")  # a HEAD's answer has no body
    assert error_code(missing) == "404"
    slow = s3_error(503, {}, b"<Error><Code>SlowDown</Code></Error>", "PutObject")
    assert classify(slow) is Action.RETRY
    garbled = s3_error(500, {}, b"<html>oops", "PutObject")
    assert error_code(garbled) == "500"
    assert classify(garbled) is Action.RETRY


class RegionalS3:
    """An S3 whose bucket is in ``home``: a request signed for another region gets 301 and
    ``x-amz-bucket-region`` (as S3 answers), one signed for ``home`` gets 200."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.scopes: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        auth = next(line for line in lines if line.lower().startswith("authorization:"))
        scope = auth.split("Credential=")[1].split("/")[2]  # AKID/day/REGION/s3/aws4_request
        self.scopes.append(scope)
        sizes = [int(line.split(":")[1]) for line in lines if line.lower().startswith("content-le")]
        await reader.readexactly(sizes[0] if sizes else 0)
        if scope == self.home:
            await answer(writer, 200, b"")
            return
        error = b"<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>"
        body = b"" if lines[0].startswith("HEAD") else error  # a HEAD's answer has no body
        writer.write(
            b"HTTP/1.1 301 X\r\nx-amz-bucket-region: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (self.home.encode(), len(body), body)
        )
        await writer.drain()
        writer.close()


async def test_a_bucket_in_another_region_is_followed_there_as_botocore_follows_it() -> None:
    s3 = RegionalS3("eu-central-1")
    async with serving(s3.handle) as base:
        client = LeanS3(
            StaticCredentials(Frozen("AKID", SECRET, None)),
            endpoint=base,
            region="us-east-1",
            read_timeout=5,
            attempts=3,
            ssl_context=None,
        )
        try:
            await client.head_bucket(Bucket="archive")
            await client.put_object(Bucket="archive", Key="k", Body=b"x", IfNoneMatch="*")
        finally:
            client.close()
    assert s3.scopes == ["us-east-1", "eu-central-1", "eu-central-1"], "moved once, then stays"
