"""Run ``consumer.lambda_handler.handler`` the way a Lambda execution environment does: one
process, the same module for every invocation (warm starts), a context whose remaining time
counts down.

    python tests/deploy/lambda_driver.py EVENTS.json ANSWERS.json TIMEOUT_MS

EVENTS.json holds a list of Kinesis events; ANSWERS.json receives one
``{"response": …, "seconds": …}`` per event. Configuration comes from the environment.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/{}"


def lambda_record(
    stream: str, shard_id: str, seq: str, data: bytes, key: str = "pk"
) -> dict[str, Any]:
    """One record of a Kinesis event as Lambda delivers it."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": key,
            "sequenceNumber": seq,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": 1767225600.0,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/telemax-lambda",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN.format(stream),
    }


class Context:
    """The part of the Lambda context object the handler uses."""

    def __init__(self, timeout_ms: int) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(events_path: str, answers_path: str, timeout_ms: str) -> int:
    from consumer import lambda_handler

    answers = []
    for event in json.loads(Path(events_path).read_text()):
        started = time.monotonic()
        response = lambda_handler.handler(event, Context(int(timeout_ms)))
        answers.append({"response": response, "seconds": time.monotonic() - started})
    lambda_handler.reset()
    Path(answers_path).write_text(json.dumps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
