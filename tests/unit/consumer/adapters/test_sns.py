"""The alerts' SNS calls on the lean path (consumer.adapters.sns): the body botocore's query
serializer writes, signed as botocore signs it, and the answers and errors its query parser
makes of SNS's XML (the whole call against moto: tests/integration/test_alerts.py)."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore.credentials import ReadOnlyCredentials
from botocore.parsers import create_parser

from consumer.adapters.sigv4 import SigV4
from consumer.adapters.sns import CONTENT_TYPE, answer_of, query_body, sns_error
from kernel.aws import MISSING_CODES, classify, error_code
from kernel.errors import Action
from tests.unit.consumer.adapters.botocore_requests import ENDPOINT, SECRET, botocores_request

ALERT = {
    "TopicArn": "arn:aws:sns:eu-west-1:123456789012:alerts.fifo",
    "Message": '{"orderID": "ORD-1", "total": 1500.0, "note": "héllo & ~bye+"}',
    "Subject": "orders: large order ORD-1",
    "MessageAttributes": {
        "feed": {"DataType": "String", "StringValue": "orders"},
        "rule": {"DataType": "String", "StringValue": "large order"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    },
    "MessageGroupId": "ORD-1",
    "MessageDeduplicationId": "9f86d081884c7d659a2feaa0c55ad015",
}


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzE"])
@pytest.mark.parametrize(
    ("operation", "params"),
    [("Publish", ALERT), ("GetTopicAttributes", {"TopicArn": ALERT["TopicArn"]})],
    ids=["publish", "topic-attributes"],
)
def test_a_call_is_the_body_and_signature_botocore_sends(
    operation: str, params: dict[str, Any], token: str | None
) -> None:
    theirs = botocores_request("sns", operation, token, **params)
    body = query_body(operation, params)
    their_body: Any = theirs.body  # (a str, prepared)
    assert body == (their_body if isinstance(their_body, bytes) else their_body.encode())
    sent: Any = theirs.headers  # (bytes values, as botocore signs them)
    headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in sent.items()}
    assert headers["Content-Type"] == CONTENT_TYPE
    ours = SigV4(ENDPOINT, "eu-west-1", "sns").headers(
        body,
        {"Content-Type": CONTENT_TYPE},
        ReadOnlyCredentials("AKIDEXAMPLE", SECRET, token),
        headers["X-Amz-Date"],
    )
    assert ours["Authorization"] == headers["Authorization"]


def test_a_parameter_the_lean_sns_does_not_send_is_refused() -> None:
    with pytest.raises(TypeError, match="Publish: Tags is list"):
        query_body("Publish", {"TopicArn": "t", "Tags": []})


XMLNS = 'xmlns="http://sns.amazonaws.com/doc/2010-03-31/"'
PUBLISHED = (
    f"<PublishResponse {XMLNS}><PublishResult><MessageId>abc-1</MessageId>"
    "<SequenceNumber>10000000000000001000</SequenceNumber></PublishResult>"
    "<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></PublishResponse>"
).encode()
ATTRIBUTES = (
    f"<GetTopicAttributesResponse {XMLNS}><GetTopicAttributesResult><Attributes>"
    "<entry><key>TopicArn</key><value>arn:aws:sns:eu-west-1:1:t</value></entry>"
    "<entry><key>Policy</key><value>{&quot;Version&quot;: &quot;2012-10-17&quot;}</value></entry>"
    "<entry><key>FifoTopic</key><value>false</value></entry>"
    "</Attributes></GetTopicAttributesResult>"
    "<ResponseMetadata><RequestId>r-2</RequestId></ResponseMetadata>"
    "</GetTopicAttributesResponse>"
).encode()


@pytest.mark.parametrize(
    ("operation", "body"),
    [("Publish", PUBLISHED), ("GetTopicAttributes", ATTRIBUTES)],
    ids=["publish", "topic-attributes"],
)
def test_an_answer_reads_as_botocores(operation: str, body: bytes) -> None:
    shape = botocore.session.get_session().get_service_model("sns").operation_model(operation)
    parser: Any = create_parser("query")
    theirs = parser.parse({"status_code": 200, "headers": {}, "body": body}, shape.output_shape)
    ours = answer_of(operation, body)
    assert ours.pop("ResponseMetadata") == {
        "RequestId": theirs.pop("ResponseMetadata")["RequestId"]
    }
    assert ours == theirs


NOT_FOUND = (
    f"<ErrorResponse {XMLNS}><Error><Type>Sender</Type><Code>NotFound</Code>"
    "<Message>Topic does not exist</Message></Error><RequestId>r-3</RequestId></ErrorResponse>"
).encode()
THROTTLED = (
    f"<ErrorResponse {XMLNS}><Error><Type>Sender</Type><Code>Throttling</Code>"
    "<Message>Rate exceeded</Message></Error><RequestId>r-4</RequestId></ErrorResponse>"
).encode()


@pytest.mark.parametrize(
    ("status", "body", "action"),
    [
        (404, NOT_FOUND, Action.GIVE_UP),
        (400, THROTTLED, Action.RETRY),
        (503, b"", Action.RETRY),
        (502, b"<html>bad gateway</html>", Action.RETRY),
    ],
    ids=["not-found", "throttled", "empty-5xx", "proxy-html"],
)
def test_an_error_is_botocores_for_the_same_answer(
    status: int, body: bytes, action: Action
) -> None:
    error = sns_error(status, {}, body, "Publish")
    parser: Any = create_parser("query")
    theirs = parser.parse({"status_code": status, "headers": {}, "body": body}, None)
    assert error.response["Error"] == theirs["Error"]
    assert error.response["ResponseMetadata"].get("RequestId") == theirs["ResponseMetadata"].get(
        "RequestId"
    )
    assert classify(error) is action
    if status == 404:
        assert error_code(error) in MISSING_CODES  # a missing topic stops start-up as such
