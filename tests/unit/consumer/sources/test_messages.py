"""SQS messages as records, and which of a batch to delete: pure."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.sources.messages import (
    deletable,
    failed_in_lambda,
    is_poison,
    lambda_record_of,
    record_of,
    shard_of,
)


def message(n: int, group: str | None = None, receives: int = 1) -> dict[str, Any]:
    attributes = {"ApproximateReceiveCount": str(receives), "SentTimestamp": "1764676800000"}
    if group is not None:
        attributes["MessageGroupId"] = group
    return {
        "MessageId": f"m{n}",
        "ReceiptHandle": f"r{n}",
        "Body": '{"n": 1}',
        "Attributes": attributes,
    }


def test_a_message_is_a_record_named_by_its_id() -> None:
    record = record_of(message(1, group="g"))
    assert record == {
        "Data": b'{"n": 1}',
        "SequenceNumber": "m1",
        "PartitionKey": "g",
        "ApproximateArrivalTimestamp": 1764676800.0,
    }
    assert shard_of("https://sqs.eu-west-1.amazonaws.com/123/orders.fifo") == "sqs:orders.fifo"


def test_a_lambda_event_message_is_the_same_record() -> None:
    event = {
        "messageId": "m1",
        "body": '{"n": 1}',
        "attributes": {"SentTimestamp": "1764676800000", "MessageGroupId": "g"},
    }
    assert lambda_record_of(event) == record_of(message(1, group="g"))


@pytest.mark.parametrize(
    ("groups", "undone", "fifo", "deleted"),
    [
        pytest.param([None] * 4, {"m1"}, False, ["m0", "m2", "m3"], id="standard: all done ones"),
        pytest.param(["a", "a", "a", "b"], {"m1"}, True, ["m0", "m3"], id="fifo: a group stops"),
        pytest.param(["a", "b", "a", "b"], {"m0"}, True, ["m1", "m3"], id="fifo: others go on"),
        pytest.param(["a", "a"], set(), True, ["m0", "m1"], id="fifo: all done"),
    ],
)
def test_which_messages_are_deleted(
    groups: list[str | None], undone: set[str], fifo: bool, deleted: list[str]
) -> None:
    messages = [message(n, group) for n, group in enumerate(groups)]
    assert [m["MessageId"] for m in deletable(messages, undone, fifo)] == deleted


def test_a_message_received_too_often_is_poison() -> None:
    assert not is_poison(message(1, receives=9), 10)
    assert is_poison(message(1, receives=10), 10)


@pytest.mark.parametrize(
    ("undone", "fifo", "failed"),
    [
        ({"b"}, False, ["b"]),
        ({"b", "d"}, False, ["b", "d"]),
        ({"b"}, True, ["b", "c", "d"]),  # Lambda's FIFO rule: the rest after the first failure
        (set(), True, []),
    ],
)
def test_the_lambda_partial_batch_response(undone: set[str], fifo: bool, failed: list[str]) -> None:
    assert failed_in_lambda(["a", "b", "c", "d"], undone, fifo) == failed
