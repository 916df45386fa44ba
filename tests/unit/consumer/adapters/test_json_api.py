"""consumer.adapters.json_api: error answers become the ClientError botocore's JSON parser
makes of them, classified as botocore's would be (the signature: test_sigv4.py; a whole call
on the wire: test_fastpath.py's prepared writes)."""

from __future__ import annotations

import pytest

from consumer.adapters.json_api import error_from
from kernel.aws import classify, error_code
from kernel.errors import Action


class Headers(dict[str, str]):
    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        return next((v for k, v in self.items() if k.lower() == key.lower()), default)


@pytest.mark.parametrize(
    ("status", "body", "code", "action"),
    [
        (
            400,
            b'{"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",'
            b' "message": "slow down"}',
            "ProvisionedThroughputExceededException",
            Action.RETRY,
        ),
        (
            400,
            b'{"__type": "ExpiredIteratorException", "message": "old"}',
            "ExpiredIteratorException",
            Action.GIVE_UP,
        ),
        (
            400,
            b'{"__type": "com.amazon.coral.validate#ValidationException", "Message": "no"}',
            "ValidationException",
            Action.GIVE_UP,
        ),
        (
            400,
            b'{"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"}',
            "ConditionalCheckFailedException",
            Action.FENCE,
        ),
        (500, b'{"__type": "InternalFailure"}', "InternalFailure", Action.RETRY),
        (500, b"<html>oops</html>", "500", Action.RETRY),
        (503, b"", "503", Action.RETRY),
        (
            400,
            b'{"__type": "AccessDeniedException:http://internal.amazon.com/"}',
            "AccessDeniedException",
            Action.GIVE_UP,
        ),
    ],
)
def test_error_answers_map_as_botocore_maps_them(
    status: int, body: bytes, code: str, action: Action
) -> None:
    error = error_from(status, Headers({"x-amzn-RequestId": "r-1"}), body, "BatchWriteItem")
    assert error_code(error) == code
    assert classify(error) is action
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.operation_name == "BatchWriteItem"
