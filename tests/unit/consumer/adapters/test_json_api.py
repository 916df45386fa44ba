"""consumer.adapters.json_api: error answers become the ClientError botocore's JSON parser
makes of them — the same code, message and request id as botocore's parser finds in the same
answer —, classified as botocore's would be (the signature: test_sigv4.py; a whole call on the
wire: test_fastpath.py's prepared writes)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.awsrequest import HeadersDict
from botocore.parsers import create_parser

from consumer.adapters.json_api import error_from
from kernel.aws import MISSING_CODES, classify, error_code
from kernel.errors import Action


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
    error = error_from(status, {"x-amzn-requestid": "r-1"}, body, "BatchWriteItem")
    assert error_code(error) == code
    assert classify(error) is action
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error.operation_name == "BatchWriteItem"


# SQS's missing queue, as SQS (and moto) answer it over the JSON protocol: the code botocore
# gives is the query protocol's name, from the x-amzn-query-error header
SQS_QUEUE_MISSING = (
    b'{"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "no such queue"}',
    {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"},
)


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (400, SQS_QUEUE_MISSING[0], SQS_QUEUE_MISSING[1]),
        (400, b'{"__type": "x#ThrottlingException"}', {"x-amzn-query-error": "Throttled"}),
        (400, b'{"__type": "x#ThrottlingException"}', {"x-amzn-query-error": ";Sender"}),
        (400, b'{"__type": "x#ThrottlingException"}', {"x-amzn-query-error": "A;B;C"}),
        (400, b"", {"x-amzn-errortype": "ThrottlingException:http://internal/"}),
        (500, b"<html>oops</html>", {}),
        (503, b"  ", {}),
        (502, b"not json", {}),
        (400, b'{"__type": "Bad", "Message": "capital M"}', {}),
    ],
)
def test_the_error_is_botocores_for_the_same_answer(
    status: int, body: bytes, headers: dict[str, str]
) -> None:
    headers = {"x-amzn-requestid": "r-2", "content-type": "application/x-amz-json-1.0", **headers}
    error = error_from(status, headers, body, "ReceiveMessage")
    parser: Any = create_parser("json")  # (an error answer needs no output shape)
    theirs = parser.parse(
        {"status_code": status, "headers": HeadersDict(headers), "body": body}, None
    )
    assert error.response["Error"] == theirs["Error"]
    assert error.response["ResponseMetadata"]["RequestId"] == "r-2"
    assert error.response["ResponseMetadata"]["HTTPHeaders"] == headers


def test_a_missing_queue_reads_as_missing_at_start_up() -> None:
    error = error_from(400, SQS_QUEUE_MISSING[1], SQS_QUEUE_MISSING[0], "GetQueueAttributes")
    assert error_code(error) == "AWS.SimpleQueueService.NonExistentQueue"
    assert error_code(error) in MISSING_CODES
    assert classify(error) is Action.GIVE_UP
