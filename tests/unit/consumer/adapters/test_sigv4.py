"""SigV4 byte-identical to botocore's ``SigV4Auth``, for one request and for a signer kept
across headers, tokens, times and days."""

from __future__ import annotations

import calendar
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from consumer.adapters.sigv4 import SigV4

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def botocore_headers(
    url: str,
    region: str,
    service: str,
    body: bytes,
    headers: dict[str, str],
    credentials: ReadOnlyCredentials,
) -> dict[str, str]:
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, service, region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("url", "region", "service", "token"),
    [
        ("https://dynamodb.eu-west-1.amazonaws.com/", "eu-west-1", "dynamodb", None),
        ("https://kinesis.us-east-1.amazonaws.com", "us-east-1", "kinesis", None),
        ("http://127.0.0.1:4567/", "us-east-1", "kinesis", None),
        ("https://dynamodb.ap-south-1.amazonaws.com/", "ap-south-1", "dynamodb", "FwoGZXIvYXdzE"),
        ("https://kinesis.eu-central-1.amazonaws.com:443/", "eu-central-1", "kinesis", "tok/en="),
    ],
)
@pytest.mark.parametrize("body", [b"{}", b'{"ShardIterator": "AAA", "Limit": 10000}', b"x" * 9000])
def test_signature_is_byte_identical_to_botocores(
    url: str, region: str, service: str, token: str | None, body: bytes
) -> None:
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", SECRET, token)
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.GetRecords",
    }
    theirs = botocore_headers(url, region, service, body, headers, credentials)
    ours = SigV4(url, region, service).headers(body, headers, credentials, theirs["X-Amz-Date"])
    assert ours["Authorization"] == theirs["Authorization"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")
    assert ours["X-Amz-Date"] == theirs["X-Amz-Date"]


def test_one_signer_stays_byte_identical_across_headers_tokens_and_times() -> None:
    """The signer keeps each set of headers' canonical form: a request with other headers,
    another token (a rotation) or another second must not be signed with a form of before."""
    url, region = "https://kinesis.us-east-1.amazonaws.com", "us-east-1"
    signer = SigV4(url, region, "kinesis")
    targets = ["Kinesis_20131202.GetRecords", "Kinesis_20131202.GetShardIterator"]
    for n in range(12):
        token = (None, "FwoGZXIvYXdzE", "tok/en=")[n % 3]
        credentials = ReadOnlyCredentials("AKIDEXAMPLE", SECRET, token)
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": targets[n % 2]}
        if n % 4 == 3:
            headers["X-Amz-Meta"] = f" value {n} "
        body = b'{"Limit": %d}' % n
        theirs = botocore_headers(url, region, "kinesis", body, headers, credentials)
        ours = signer.headers(body, headers, credentials, theirs["X-Amz-Date"])
        assert ours["Authorization"] == theirs["Authorization"], n
        assert ours.get("X-Amz-Security-Token") == theirs.get("X-Amz-Security-Token")
    assert len(signer._forms) == 6 + 3  # (target, token) pairs, and the extra header's


def test_the_time_signed_is_now() -> None:
    signer = SigV4("https://kinesis.us-east-1.amazonaws.com", "us-east-1", "kinesis")
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", SECRET, None)
    signed = signer.headers(b"{}", {}, credentials)["X-Amz-Date"]
    at = calendar.timegm(time.strptime(signed, "%Y%m%dT%H%M%SZ"))
    # (within a second or two: this machine's coarse clock, which gmtime() reads, and its
    # precise one, which time() reads, were seen a second apart)
    assert abs(at - time.time()) < 2.5
    later = signer.headers(b"{}", {}, credentials)["X-Amz-Date"]
    assert later >= signed


def test_the_signing_key_follows_the_day_and_the_secret() -> None:
    signer = SigV4("https://dynamodb.eu-west-1.amazonaws.com/", "eu-west-1", "dynamodb")
    first = ReadOnlyCredentials("AKID", SECRET, None)
    rotated = ReadOnlyCredentials("AKID", SECRET + "2", None)
    day1 = signer.headers(b"{}", {}, first, "20261122T000000Z")["Authorization"]
    day2 = signer.headers(b"{}", {}, first, "20261123T000000Z")["Authorization"]
    other = signer.headers(b"{}", {}, rotated, "20261122T000000Z")["Authorization"]
    again = signer.headers(b"{}", {}, first, "20261122T000000Z")["Authorization"]
    assert len({day1, day2, other}) == 3
    assert again == day1
