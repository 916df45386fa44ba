"""One test per fault kind: the worker keeps going, loses nothing, and counts what happened.

Faults that no emulator produces (throttling, UnprocessedItems, 5xx, resets, timeouts) are
injected by devkit.faultproxy between the worker and kinesalite/dynalite.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from devkit.faultproxy import Rule
from devkit.local import metrics_text, sample
from tests.faults.conftest import Faulty
from tests.support import keys_of, readings, wait_until

pytestmark = pytest.mark.timeout(120)

RECORDS = 600


CASES = [
    pytest.param(
        "dynamodb",
        [Rule("BatchWriteItem", "error", limit=6)],
        ("telemax_throttles_total", {"api": "BatchWriteItem"}),
        id="batch-write-throttled",
    ),
    pytest.param(
        "dynamodb",
        [Rule("BatchWriteItem", "unprocessed", rate=0.5, fraction=0.4)],
        ("telemax_unprocessed_items_retried_total", {}),
        id="unprocessed-items-partial",
    ),
    pytest.param(
        "dynamodb",
        [Rule("BatchWriteItem", "unprocessed", fraction=1.0, limit=8)],
        ("telemax_unprocessed_items_retried_total", {}),
        id="unprocessed-items-total",
    ),
    pytest.param(
        "dynamodb",
        [Rule("BatchWriteItem", "error", code="InternalServerError", status=500, limit=6)],
        ("telemax_aws_errors_total", {"api": "BatchWriteItem", "error": "InternalServerError"}),
        id="batch-write-5xx",
    ),
    pytest.param(
        "dynamodb",
        [Rule("BatchWriteItem", "reset", limit=6)],
        ("telemax_aws_errors_total", {"api": "BatchWriteItem", "error": "ConnectionClosedError"}),
        id="connection-resets",
    ),
    pytest.param(
        "dynamodb",
        [Rule("BatchWriteItem", "delay", delay_s=2.5, limit=6)],
        ("telemax_aws_errors_total", {"api": "BatchWriteItem", "error": "ReadTimeoutError"}),
        id="read-timeouts",
    ),
    pytest.param(
        "kinesis",
        [Rule("GetRecords", "error", limit=6)],
        ("telemax_throttles_total", {"api": "GetRecords"}),
        id="get-records-throttled",
    ),
    pytest.param(
        "kinesis",
        [Rule("GetRecords", "error", code="ExpiredIteratorException", limit=2)],
        (
            "telemax_aws_errors_total",
            {"api": "GetRecords", "error": "ExpiredIteratorException"},
        ),
        id="expired-iterator",
    ),
    pytest.param(
        "dynamodb",
        [Rule("UpdateItem", "error", rate=0.3), Rule("Scan", "error", rate=0.3)],
        None,
        id="lease-table-throttled",
    ),
]


@pytest.mark.parametrize("fast_path", ["true", "false"], ids=["fast-path", "generic-path"])
@pytest.mark.parametrize(("service", "rules", "metric"), CASES)
def test_fault_is_survived_without_loss(
    faulty: Faulty,
    service: str,
    rules: list[Rule],
    metric: tuple[str, dict[str, str]] | None,
    fast_path: str,
) -> None:
    stack = faulty.stack
    stack.setup(shards=2)
    produced = readings(RECORDS)
    stack.put(produced)
    proxy = faulty.kinesis if service == "kinesis" else faulty.dynamodb
    proxy.set_rules(rules)
    # One botocore attempt: every injected fault reaches telemax's own retry loops.
    worker = faulty.worker(
        TELEMAX_AWS_READ_TIMEOUT_S="1", TELEMAX_AWS_MAX_ATTEMPTS="1", TELEMAX_FAST_PATH=fast_path
    )
    wait_until(lambda: stack.count() >= RECORDS, 90, f"{RECORDS} items despite the faults")

    assert keys_of(stack.scan()) == {(r["hardwareID"], r["Timestamp"]) for r in produced}
    assert stack.count(stack.dlq_table) == 0, "faults are not bad data"
    assert sum(proxy.injected.values()) > 0, "the faults were injected"
    text = metrics_text(worker.metrics_port)
    if metric is not None:
        name, labels = metric
        assert sample(text, name, **labels) > 0, f"{name}{labels} counts the fault"
    # No record read twice: every fault was absorbed without replaying from a checkpoint,
    # except where a lost lease forced a replay (allowed: duplicates are idempotent).
    received = sample(text, "telemax_records_received_total")
    if sample(text, "telemax_leases_lost_total") == 0:
        assert received == RECORDS
    assert worker.stop() == 0
    for lease in stack.leases().values():
        assert lease["checkpoint"]["S"].isdigit()


def test_dynamodb_unreachable_for_longer_than_two_leases(faulty: Faulty) -> None:
    stack = faulty.stack
    stack.setup(shards=2)
    worker = faulty.worker()
    ready_url = f"http://127.0.0.1:{worker.metrics_port}/readyz"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    wait_until(ready, 20, "ready")
    first = readings(300)
    stack.put(first)
    wait_until(lambda: stack.count() >= 300, 30, "first 300 stored")

    faulty.dynamodb.set_rules([Rule("*", "reset", until_s=15)])  # leases last 6 s here
    during = readings(300, offset=300)
    stack.put(during)  # arrives while DynamoDB is unreachable for the worker
    wait_until(lambda: not ready(), 15, "/readyz 503 during the outage")
    assert stack.count() == 300, "nothing written while DynamoDB is unreachable"

    wait_until(ready, 60, "/readyz 200 after the outage")
    wait_until(lambda: stack.count() >= 600, 60, "everything stored after the outage")
    assert keys_of(stack.scan()) == {(r["hardwareID"], r["Timestamp"]) for r in first + during}
    text = metrics_text(worker.metrics_port)
    assert (
        sample(text, "telemax_aws_errors_total", api="BatchWriteItem") > 0
        or sample(text, "telemax_leases_lost_total") > 0
    )
    assert worker.stop() == 0
