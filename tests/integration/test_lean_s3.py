"""The archive's S3 calls on the lean path against moto's S3 over HTTP: what botocore's
client reads back is what was put, what it gets and lists is what ours gets and lists, and S3's
answers (a missing bucket, an existing key, a missing key) come back as botocore's errors."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator

import pytest
from botocore.exceptions import ClientError

from consumer.adapters.credentials import Frozen, StaticCredentials
from consumer.adapters.s3 import LeanS3
from devkit.local import local_client
from kernel.aws import error_code

pytestmark = pytest.mark.timeout(60)
KEY = "shop/records/feed=telemax/dt=2026-12-04/hour=15/shardId-000000000001-49 5~x.json.gz"


@pytest.fixture
async def s3(moto_endpoint: str) -> AsyncIterator[LeanS3]:
    client = LeanS3(
        StaticCredentials(Frozen("testing", "testing", None)),
        endpoint=moto_endpoint,
        region="us-east-1",
        read_timeout=10,
        attempts=3,
        ssl_context=None,
    )
    yield client
    client.close()


async def test_a_put_reads_back_and_a_second_put_finds_the_first(
    s3: LeanS3, moto_endpoint: str
) -> None:
    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    boto = local_client("s3", moto_endpoint)
    boto.create_bucket(Bucket=bucket)
    await s3.head_bucket(Bucket=bucket)
    body = gzip.compress(b'{"a": 1}\n', mtime=0)
    meta = {"first": "0001", "last-sequence": "4963", "last-sub": "0", "lines": "1"}

    await s3.put_object(
        Bucket=bucket,
        Key=KEY,
        Body=body,
        IfNoneMatch="*",
        ContentType="application/x-ndjson",
        Metadata=meta,
        ServerSideEncryption="aws:kms",
    )
    theirs = boto.get_object(Bucket=bucket, Key=KEY)
    assert theirs["Body"].read() == body
    assert theirs["ContentType"] == "application/x-ndjson"
    assert theirs["Metadata"] == meta
    assert theirs["ServerSideEncryption"] == "aws:kms"

    with pytest.raises(ClientError) as again:
        await s3.put_object(Bucket=bucket, Key=KEY, Body=b"other", IfNoneMatch="*")
    assert error_code(again.value) == "PreconditionFailed"
    head = await s3.head_object(Bucket=bucket, Key=KEY)
    assert head["Metadata"] == meta and head["ContentLength"] == len(body)
    assert boto.get_object(Bucket=bucket, Key=KEY)["Body"].read() == body, "not overwritten"


async def test_what_is_missing_answers_404(s3: LeanS3, moto_endpoint: str) -> None:
    with pytest.raises(ClientError) as no_bucket:
        await s3.head_bucket(Bucket=f"nowhere-{uuid.uuid4().hex[:8]}")
    assert error_code(no_bucket.value) == "404"
    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    local_client("s3", moto_endpoint).create_bucket(Bucket=bucket)
    with pytest.raises(ClientError) as no_key:
        await s3.head_object(Bucket=bucket, Key="absent")
    assert error_code(no_key.value) == "404"


async def test_gets_and_listings_read_as_botocores(s3: LeanS3, moto_endpoint: str) -> None:
    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    boto = local_client("s3", moto_endpoint)
    boto.create_bucket(Bucket=bucket)
    prefix = "shop/records/feed=telemax/dt=2026-12-07/hour=04/shardId-000000000001-upto-"
    names = ["0003-from-0001 a", "0005-from-0004+b", "0009-from-0006~c", "0010-from-0010é"]
    for n, name in enumerate(names):
        boto.put_object(Bucket=bucket, Key=prefix + name, Body=b"%d" % n, Metadata={"n": str(n)})
    boto.put_object(Bucket=bucket, Key="shop/other", Body=b"x")

    got = await s3.get_object(Bucket=bucket, Key=prefix + names[2])
    async with got["Body"] as body:
        assert await body.read() == b"2"
    assert got["Metadata"] == {"n": "2"} and got["ContentLength"] == 1
    for asked in (
        {"Prefix": prefix},
        {"Prefix": prefix, "StartAfter": prefix + "0004", "MaxKeys": 1},
        {"Prefix": prefix, "StartAfter": prefix + "0010-from-0010é"},  # none left
        {"Prefix": prefix, "MaxKeys": 2},  # truncated: a token to go on from
    ):
        ours = await s3.list_objects_v2(Bucket=bucket, **asked)
        theirs = boto.list_objects_v2(Bucket=bucket, **asked)
        theirs.pop("ResponseMetadata")
        assert ours == theirs, asked
        if ours["IsTruncated"]:
            token = ours["NextContinuationToken"]
            rest = await s3.list_objects_v2(Bucket=bucket, Prefix=prefix, ContinuationToken=token)
            assert [o["Key"] for o in rest["Contents"]] == [prefix + n for n in names[2:]]
    with pytest.raises(ClientError) as no_key:
        await s3.get_object(Bucket=bucket, Key=prefix + "absent")
    assert error_code(no_key.value) == "NoSuchKey"
