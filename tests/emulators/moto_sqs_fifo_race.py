"""Probe: do concurrent ReceiveMessage calls on moto's server hand one FIFO message group —
or one message — to two receivers at once? (They must not: SQS keeps a group's messages
with one receiver until they are deleted or their visibility lapses.)

    python -m tests.emulators.moto_sqs_fifo_race 300   # beside a CPU hog: python3 -c 'while 1: 0'

Measured 2026-12-04 (moto 5.2.5, 2 cores): idle, 0 of 40 trials; beside one CPU hog, 7 of 300
trials gave the group to two receivers, some of them the same message to both (moto checks
visibility and marks a message received without a lock, in threads of one server). A test
that needs a FIFO group's order therefore receives with one loop on moto."""

from __future__ import annotations

import sys
import threading
from typing import Any

from devkit.local import local_client, moto_process


def one_trial(endpoint: str, name: str, receivers: int = 4) -> dict[int, list[str]]:
    sqs = local_client("sqs", endpoint)
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    for batch in range(6):
        entries = [
            {"Id": str(n), "MessageBody": f"m{batch * 10 + n}", "MessageGroupId": "g1"}
            for n in range(10)
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    got: dict[int, list[str]] = {}
    barrier = threading.Barrier(receivers)

    def receive(n: int) -> None:
        client: Any = local_client("sqs", endpoint)
        barrier.wait()
        answer = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        got[n] = [m["Body"] for m in answer.get("Messages", [])]

    threads = [threading.Thread(target=receive, args=(n,)) for n in range(receivers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {n: bodies for n, bodies in got.items() if bodies}


def main(trials: int) -> None:
    with moto_process() as endpoint:
        shared = 0
        for trial in range(trials):
            busy = one_trial(endpoint, f"probe-{trial}.fifo")
            if len(busy) > 1:
                shared += 1
                print(f"trial {trial}: one group to {len(busy)} receivers:", busy)
        print(f"{shared} of {trials} trials gave one FIFO group to more than one receiver")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
