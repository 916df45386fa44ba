"""SQS messages as records, and which of a batch to delete: pure, no I/O.

A message becomes a record as the pipeline knows them (``Data``: its body, ``SequenceNumber``:
its message id, ``PartitionKey``: its message group), so the convert and write stages are the
Kinesis ones, dead letters included (shard id ``sqs:<queue name>``, position the message id).

Which messages of a received batch to delete (:func:`deletable`): those whose every item,
dead letter and alert is durable. On a FIFO queue, order is kept per message group: a message
of a group is deleted only if every earlier message of that group in the batch is too; the
rest come back (visibility timeout) in their order, behind the one that failed.

A message received ``max_receives`` times or more without being done is *poison*: rather than
loop, it goes to the dead-letter table (``redelivered_too_often``) and is deleted.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from consumer.pipeline.convert import Record

POISON = "redelivered_too_often"
GROUP = "MessageGroupId"
RECEIVES = "ApproximateReceiveCount"
SENT = "SentTimestamp"


def shard_of(queue_url: str) -> str:
    """What dead letters name as the shard: ``sqs:<queue name>``."""
    return "sqs:" + queue_url.rstrip("/").rsplit("/", 1)[-1]


def queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def record_of(message: Mapping[str, Any]) -> Record:
    """A received message (ReceiveMessage's shape) as a pipeline record."""
    attributes = message.get("Attributes", {})
    sent = attributes.get(SENT)
    record: Record = {
        "Data": str(message.get("Body", "")).encode(),
        "SequenceNumber": str(message["MessageId"]),
        "PartitionKey": str(attributes.get(GROUP, "")),
    }
    if sent is not None:
        record["ApproximateArrivalTimestamp"] = int(sent) / 1000
    return record


def lambda_record_of(message: Mapping[str, Any]) -> Record:
    """A message of a Lambda SQS event (``messageId``, ``body``, ``attributes``)."""
    attributes = message.get("attributes", {})
    return record_of(
        {
            "MessageId": message["messageId"],
            "Body": message.get("body", ""),
            "Attributes": {k: v for k, v in attributes.items() if k in (GROUP, SENT, RECEIVES)},
        }
    )


def receives(message: Mapping[str, Any]) -> int:
    return int(message.get("Attributes", {}).get(RECEIVES, "1"))


def is_poison(message: Mapping[str, Any], max_receives: int) -> bool:
    return receives(message) >= max_receives


def deletable(
    messages: Sequence[Mapping[str, Any]], undone: Collection[str], fifo: bool
) -> list[Mapping[str, Any]]:
    """The messages to delete: done ones; on a FIFO queue only each group's done prefix."""
    if not fifo:
        return [m for m in messages if m["MessageId"] not in undone]
    blocked: set[str] = set()
    found = []
    for message in messages:
        group = str(message.get("Attributes", {}).get(GROUP, ""))
        if group in blocked:
            continue
        if message["MessageId"] in undone:
            blocked.add(group)
            continue
        found.append(message)
    return found


def failed_in_lambda(ids: Sequence[str], undone: Collection[str], fifo: bool) -> list[str]:
    """A Lambda partial batch response's failures: the undone messages; on a FIFO queue the
    first undone and every message after it (Lambda's rule, so that order holds)."""
    if not fifo:
        return [i for i in ids if i in undone]
    for index, message_id in enumerate(ids):
        if message_id in undone:
            return list(ids[index:])
    return []
