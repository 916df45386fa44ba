"""The fault proxy's ``absorb``: a BatchWriteItem answered as written, never forwarded."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

import orjson
import pytest

from devkit.faultproxy import FaultProxy, Rule
from devkit.local import LOCALHOST, free_port


def post(endpoint: str, operation: str, body: Mapping[str, object]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        endpoint + "/",
        data=orjson.dumps(body),
        headers={
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
            "Content-Type": "application/x-amz-json-1.0",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_batch_write_to_the_named_table_is_answered_written_and_not_forwarded() -> None:
    nobody = f"http://{LOCALHOST}:{free_port()}"  # nothing listens: a forward fails
    rule = Rule("BatchWriteItem", "absorb", body=lambda body: b'"records"' in body)
    with FaultProxy(nobody, [rule]) as proxy:
        writes = {"RequestItems": {"records": [{"PutRequest": {"Item": {"k": {"S": "1"}}}}]}}
        status, answer = post(proxy.endpoint, "BatchWriteItem", writes)
        assert (status, orjson.loads(answer)) == (200, {"UnprocessedItems": {}})
        assert proxy.injected[("BatchWriteItem", "absorb")] == 1
        assert proxy.forwarded["BatchWriteItem"] == 0
        # another table's write goes on to the upstream (which is not there)
        others = {"RequestItems": {"leases": [{"PutRequest": {"Item": {"k": {"S": "1"}}}}]}}
        status, _ = post(proxy.endpoint, "BatchWriteItem", others)
        assert status == 500 and proxy.forwarded["BatchWriteItem"] == 1


def test_only_a_batch_write_can_be_absorbed() -> None:
    with pytest.raises(ValueError, match="BatchWriteItem"):
        Rule("PutItem", "absorb")
