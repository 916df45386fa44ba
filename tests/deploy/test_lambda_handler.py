"""The Lambda alternative on real local endpoints: moto's server over HTTP, no botocore mocks.

The same Kinesis records go through a worker process into one set of tables and through
``consumer.lambda_handler`` (Lambda-shaped events, one warm process) into another; the rows must
be identical. Faults DynamoDB would produce (a refused write, an outage) are injected by an HTTP
proxy in front of moto.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.feeds.telemax import to_item
from consumer.pipeline.deadletter import position_key
from devkit.faultproxy import FaultProxy, Rule
from devkit.local import WorkerProcess, local_client
from kernel.kpl import MAGIC
from kernel.kpl.encode import Entry, aggregate
from tests.deploy.conftest import Tables, run, scan
from tests.deploy.lambda_driver import lambda_record
from tests.support import archived, create_orders_table

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("lambda_driver.py")
BAD_RECORDS = {
    b"{oops": "not_json",
    b"[1, 2]": "not_object",
    b'{"hardwareID": "HW-BAD"}': "missing_field",
    b'{"hardwareID": "HW-BAD", "Timestamp": "yesterday"}': "bad_timestamp",
    b'{"hardwareID": "HW-BAD", "Timestamp": "2026-01-01T00:00:00Z", "Data2": "fast"}': (
        "wrong_type"
    ),
}


def reading(i: int, **changes: Any) -> dict[str, Any]:
    return {
        "hardwareID": f"HW-{i % 40:03d}",
        "Timestamp": f"2026-01-01T00:{(i // 40) % 60:02d}:00.{i:06d}Z",
        "Data1": f"LNK-{i % 7}",
        "Data2": round(10 + i * 0.5, 2),
        "Data3": i % 97 + 0.25,
        **changes,
    }


def invoke(
    events: list[dict[str, Any]],
    env: dict[str, str],
    tmp: Path,
    timeout_ms: int = 60_000,
    fast_path: bool | None = None,
    lean: bool | None = None,
) -> list[dict[str, Any]]:
    """Run the events through the handler in one process (a warm execution environment);
    ``fast_path``: whether its cold start must say it writes on the lean path; ``lean``:
    whether it must say its clients are the lean ones (``aws_clients``)."""
    events_path, answers_path = tmp / "events.json", tmp / "answers.json"
    events_path.write_text(json.dumps(events))
    done = run(
        sys.executable, DRIVER, events_path, answers_path, str(timeout_ms),
        env={**os.environ, **env}, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if fast_path is not None:
        ready = [json.loads(line) for line in done.stdout.splitlines() if "lambda_ready" in line]
        assert [line["fast_path"] for line in ready] == [fast_path], done.stdout[-3000:]
    if lean is not None:
        opened = [json.loads(line) for line in done.stdout.splitlines() if "aws_clients" in line]
        assert [line["lean"] for line in opened] == [lean], done.stdout[-3000:]
    answers: list[dict[str, Any]] = json.loads(answers_path.read_text())
    return answers


def stream_events(kinesis: Any, stream: str, batch_size: int = 100) -> list[dict[str, Any]]:
    """Every record of the stream, read with GetRecords, as Lambda events of ``batch_size``."""
    events: list[dict[str, Any]] = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[dict[str, Any]] = []
        while True:
            answer = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if not answer["Records"]:
                break
            records += [
                lambda_record(stream, shard_id, r["SequenceNumber"], r["Data"], r["PartitionKey"])
                for r in answer["Records"]
            ]
            iterator = answer["NextShardIterator"]
        for start in range(0, len(records), batch_size):
            events.append({"Records": records[start : start + batch_size]})
    return events


def canonical(items: list[dict[str, Any]], drop: tuple[str, ...] = ()) -> list[bytes]:
    """Rows as sorted canonical JSON, ignoring attributes named in ``drop``."""
    return sorted(
        orjson.dumps(
            {k: v for k, v in item.items() if k not in drop},
            option=orjson.OPT_SORT_KEYS,
            default=lambda b: base64.b64encode(b).decode(),
        )
        for item in items
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what()}")
        time.sleep(0.2)


@pytest.mark.timeout(110)
@pytest.mark.parametrize("fast_path", [True, False], ids=["lean", "aiobotocore"])
def test_worker_and_lambda_store_identical_rows(
    fast_path: bool, make_tables: Any, clients: tuple[Any, Any], tmp_path: Path
) -> None:
    """The handler's records writes on the lean path (the default) and on aiobotocore's."""
    kinesis, dynamodb = clients
    worker_side: Tables = make_tables(
        TELEMAX_LEASE_DURATION_S="4",
        TELEMAX_IDLE_POLL_S="0.2",
        TELEMAX_CHECKPOINT_INTERVAL_S="0.5",
        TELEMAX_SHUTDOWN_GRACE_S="10",
    )
    lambda_side: Tables = make_tables(
        stream=worker_side.stream, TELEMAX_FAST_PATH=str(fast_path).lower()
    )
    worker_side.setup(shards=2)
    lambda_side.setup(shards=2)  # the stream exists: only the second set of tables is created

    valid = [reading(i) for i in range(400)]
    # The same key again, later in the same shard, with other values: the last one must win.
    rewritten = [reading(i, Data2=999.5, Data1=7) for i in (3, 77, 211)]
    payloads = [(orjson.dumps(r), r["hardwareID"]) for r in valid]
    payloads += [(data, f"bad-{n}") for n, data in enumerate(BAD_RECORDS)]
    payloads += [(orjson.dumps(r), r["hardwareID"]) for r in rewritten]
    # KPL-aggregated records (one with a bad user record inside) and a corrupt aggregate.
    packed = [reading(i) for i in range(400, 460)]
    entries = [Entry(orjson.dumps(r), r["hardwareID"]) for r in packed]
    entries.insert(30, Entry(b"{inside", "HW-001"))
    aggregates = list(aggregate(entries, max_bytes=4096))
    assert len(aggregates) > 1 and all(a.data[:4] == MAGIC for a in aggregates)
    payloads += [(a.data, a.partition_key) for a in aggregates]
    payloads.append((MAGIC + b"not a protobuf" + bytes(16), "HW-002"))
    valid += packed
    dead_count = len(BAD_RECORDS) + 2
    for start in range(0, len(payloads), 500):  # one call in flight: moto loses concurrent puts
        chunk = payloads[start : start + 500]
        answer = kinesis.put_records(
            StreamName=worker_side.stream,
            Records=[{"Data": data, "PartitionKey": key} for data, key in chunk],
        )
        assert answer["FailedRecordCount"] == 0

    worker = WorkerProcess("worker-a", worker_side.env, tmp_path)
    try:
        events = stream_events(kinesis, worker_side.stream)
        assert sum(len(e["Records"]) for e in events) == len(payloads)
        answers = invoke(events, lambda_side.env, tmp_path, fast_path=fast_path)
        assert [a["response"] for a in answers] == [{"batchItemFailures": []}] * len(events)

        def worker_done() -> bool:
            rows = len(scan(dynamodb, worker_side.table))
            letters = len(scan(dynamodb, worker_side.dlq_table))
            progress.append(f"{rows}/{len(valid)} rows, {letters}/{dead_count} dead letters")
            return rows == len(valid) and letters == dead_count

        progress: list[str] = []
        wait_for(worker_done, 60, lambda: f"the worker to store every record: {progress[-1]}")
    finally:
        code = worker.stop(timeout=20)
    assert code == 0, "\n".join(worker.log_lines()[-30:])

    worker_rows = scan(dynamodb, worker_side.table)
    lambda_rows = scan(dynamodb, lambda_side.table)
    assert canonical(lambda_rows) == canonical(worker_rows)
    by_key = {(r["hardwareID"]["S"], r["Timestamp"]["S"]): r for r in lambda_rows}
    for r in rewritten:
        row = by_key[(r["hardwareID"], r["Timestamp"])]
        assert row["Data2"] == {"N": "999.5"} and row["Data1"] == {"N": "7"}
    assert len(by_key) == len(valid)

    # Dead letters: the same records, reasons and positions; only the time seen differs.
    worker_dead = scan(dynamodb, worker_side.dlq_table)
    lambda_dead = scan(dynamodb, lambda_side.dlq_table)
    assert canonical(lambda_dead, drop=("seenAt",)) == canonical(worker_dead, drop=("seenAt",))
    assert len(lambda_dead) == dead_count
    reasons = sorted(d["reason"]["S"] for d in lambda_dead)
    assert reasons.count("not_json") == 2  # one plain, one inside an aggregate
    assert set(BAD_RECORDS.values()) <= set(reasons)
    assert [r for r in reasons if r.startswith("kpl_")], reasons
    (inner,) = [d for d in lambda_dead if d["data"]["B"] == b"{inside"]
    assert inner["subSequenceNumber"] == {"N": "30"}


def synthetic_event(stream: str, shard_id: str, payloads: list[bytes]) -> dict[str, Any]:
    base = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000
    return {
        "Records": [
            lambda_record(stream, shard_id, str(base + 1000 * n), data)
            for n, data in enumerate(payloads)
        ]
    }


def stored_keys(dynamodb: Any, table: str) -> set[tuple[str, str]]:
    return {(r["hardwareID"]["S"], r["Timestamp"]["S"]) for r in scan(dynamodb, table)}


def key_of(payload: bytes) -> tuple[str, str]:
    value = orjson.loads(payload)
    return value["hardwareID"], value["Timestamp"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fast_path", [True, False], ids=["lean", "aiobotocore"])
def test_bad_record_is_dead_lettered_and_refused_write_reported(
    fast_path: bool,
    make_tables: Any,
    clients: tuple[Any, Any],
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    _, dynamodb = clients
    tables: Tables = make_tables(TELEMAX_FAST_PATH=str(fast_path).lower())
    tables.setup(shards=1)
    shard = "shardId-000000000000"
    marker = "HW-REFUSED"
    payloads = [b"{oops"]
    payloads += [orjson.dumps(reading(i)) for i in range(60)]
    payloads[40] = orjson.dumps(reading(39, hardwareID=marker))  # lands in the second chunk
    event = synthetic_event(tables.stream, shard, payloads)
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]

    refuse_marker = denied(lambda body: marker.encode() in body)
    with FaultProxy(moto_endpoint, [refuse_marker]) as proxy:
        # One request in flight, so chunks are written in order and the answer is exact.
        env = {
            **tables.env,
            "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint,
            "TELEMAX_WRITE_CONCURRENCY": "1",
        }
        (answer,) = invoke([event], env, tmp_path, fast_path=fast_path)
    assert proxy.injected == {("BatchWriteItem", "error"): 1}

    # The bad record is in the dead-letter table with where it came from and why.
    (letter,) = scan(dynamodb, tables.dlq_table)
    assert letter["shardId"] == {"S": shard}
    assert letter["position"] == {"S": position_key(seqs[0], 0)}
    assert letter["sequenceNumber"] == {"S": seqs[0]}
    assert letter["reason"] == {"S": "not_json"}
    assert letter["data"] == {"B": b"{oops"}
    assert letter["stream"] == {"S": tables.stream}

    # Records 1-25 went in the first request; 26-50 (with the marker) were refused as a whole.
    # Whatever became of the request after it, Lambda must retry from record 26.
    assert answer["response"] == {"batchItemFailures": [{"itemIdentifier": seqs[26]}]}
    stored = stored_keys(dynamodb, tables.table)
    assert {key_of(p) for p in payloads[1:26]} <= stored
    assert not {key_of(p) for p in payloads[26:51]} & stored

    # Lambda's retry from the reported record, with DynamoDB accepting again: all rows stored.
    retry = {"Records": event["Records"][26:]}
    (again,) = invoke([retry], tables.env, tmp_path)
    assert again["response"] == {"batchItemFailures": []}
    assert stored_keys(dynamodb, tables.table) == {key_of(p) for p in payloads[1:]}


def denied(body: Callable[[bytes], bool]) -> Rule:
    """BatchWriteItem requests whose body ``body`` accepts are denied (AccessDeniedException):
    a write that fails in a way no retry fixes."""
    return Rule("BatchWriteItem", "error", code="AccessDeniedException", status=400, body=body)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("failure", ["InternalServerError", "UnprocessedItems"])
def test_answers_before_the_deadline_while_dynamodb_fails(
    failure: str,
    make_tables: Any,
    clients: tuple[Any, Any],
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    _, dynamodb = clients
    tables: Tables = make_tables()
    tables.setup(shards=1)
    payloads = [orjson.dumps(reading(i)) for i in range(30)] + [b"not json"]
    event = synthetic_event(tables.stream, "shardId-000000000000", payloads)
    table = tables.table.encode()

    def to_records_table(body: bytes) -> bool:
        return b'"' + table + b'"' in body

    # DynamoDB accepting none of the request's items (as when a partition is throttled), or
    # failing: only for the records table
    records_table_down = (
        Rule("BatchWriteItem", "unprocessed", fraction=1.0, body=to_records_table)
        if failure == "UnprocessedItems"
        else Rule("BatchWriteItem", "error", code=failure, status=500, body=to_records_table)
    )
    timeout_ms = 4000
    with FaultProxy(moto_endpoint, [records_table_down]) as proxy:
        env = {**tables.env, "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint}
        (answer,) = invoke([event], env, tmp_path, timeout_ms=timeout_ms)
    assert proxy.injected.total() > 3, "the sink should have kept retrying"
    assert answer["seconds"] < timeout_ms / 1000, "the handler ran into the function timeout"
    first = event["Records"][0]["kinesis"]["sequenceNumber"]
    assert answer["response"] == {"batchItemFailures": [{"itemIdentifier": first}]}
    assert scan(dynamodb, tables.table) == []
    # The dead-letter table was reachable: the bad record is done, not retried.
    assert [d["reason"]["S"] for d in scan(dynamodb, tables.dlq_table)] == ["not_json"]


# --- two records, one key, the later refused by DynamoDB (issue 10, case 5) ----------------------

SHARED_KEY = ("HW-SHARED", "2026-01-01T00:00:00.000001Z")
# Valid JSON and schema that the handler lets through (an exact number, kept as its literal)
# but DynamoDB refuses: "Number overflow" (magnitude of 1E+126 or more), a ValidationException.
OVERFLOW = b"1.0000000000000000001e200"


def shared_key_payload(data1: str, refused: bool, key: tuple[str, str] = SHARED_KEY) -> bytes:
    data2 = OVERFLOW if refused else b"1.5"
    return b'{"hardwareID": "%s", "Timestamp": "%s", "Data1": "%s", "Data2": %s}' % (
        key[0].encode(),
        key[1].encode(),
        data1.encode(),
        data2,
    )


EARLIER = shared_key_payload("earlier", refused=False)
EARLIER_REFUSED = shared_key_payload("earlier", refused=True)
LATER_REFUSED = shared_key_payload("later", refused=True)


def rows_of(dynamodb: Any, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["hardwareID"]["S"], r["Timestamp"]["S"]): r for r in scan(dynamodb, table)}


def letters_of(dynamodb: Any, table: str) -> dict[str, dict[str, Any]]:
    """Dead letters by sequence number."""
    return {d["sequenceNumber"]["S"]: d for d in scan(dynamodb, table)}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("earlier", ["accepted", "denied", "refused"])
def test_earlier_record_of_a_key_survives_the_later_ones_refusal(
    earlier: str,
    make_tables: Any,
    clients: tuple[Any, Any],
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    """Records 3 and 7 share a key; DynamoDB refuses 7. Record 3 must then be written itself
    and count as done only if it really was; record 7 is done once its dead letter is stored.
    accepted: record 3 is stored. denied: its write meets an injected AccessDeniedException,
    so Lambda must retry from record 3 (and then stores it). refused: DynamoDB refuses record 3
    too, and each record gets its own dead letter."""
    _, dynamodb = clients
    tables: Tables = make_tables()
    tables.setup(shards=1)
    payloads = [orjson.dumps(reading(i)) for i in range(10)]
    payloads[3] = EARLIER_REFUSED if earlier == "refused" else EARLIER
    payloads[7] = LATER_REFUSED
    event = synthetic_event(tables.stream, "shardId-000000000000", payloads)
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert to_item(LATER_REFUSED)["Data2"] == {"N": OVERFLOW.decode()}  # the handler lets it by

    deny_earlier = denied(lambda body: b'"earlier"' in body and b'"later"' not in body)
    with FaultProxy(moto_endpoint, [deny_earlier] if earlier == "denied" else []) as proxy:
        env = {**tables.env, "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint}
        (answer,) = invoke([event], env, tmp_path)

    readings_stored = {key_of(orjson.dumps(reading(i))) for i in range(10) if i not in (3, 7)}
    if earlier == "denied":
        assert proxy.injected == {("BatchWriteItem", "error"): 1}
        assert set(rows_of(dynamodb, tables.table)) == readings_stored
        # Record 3 was never written: Lambda must give it (and what follows) again. Record 7
        # is dead-lettered now or on that retry.
        assert answer["response"] == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}
        assert set(letters_of(dynamodb, tables.dlq_table)) <= {seqs[7]}
        (answer,) = invoke([{"Records": event["Records"][3:]}], tables.env, tmp_path)
    assert answer["response"] == {"batchItemFailures": []}
    rows = rows_of(dynamodb, tables.table)
    letters = letters_of(dynamodb, tables.dlq_table)
    if earlier == "refused":
        assert set(rows) == readings_stored
        assert set(letters) == {seqs[3], seqs[7]}
        assert letters[seqs[3]]["data"] == {"B": EARLIER_REFUSED}
    else:
        assert set(rows) == readings_stored | {SHARED_KEY}
        assert rows[SHARED_KEY]["Data1"] == {"S": "earlier"}
        assert set(letters) == {seqs[7]}
    # The later record is in the dead-letter table, as DynamoDB refused it.
    letter = letters[seqs[7]]
    assert letter["reason"] == {"S": "rejected_by_dynamodb"}
    assert "Number overflow" in letter["detail"]["S"]
    assert letter["data"] == {"B": LATER_REFUSED}


@pytest.mark.timeout(60)
def test_a_refused_record_is_not_done_when_a_later_write_fails(
    make_tables: Any, clients: tuple[Any, Any], moto_endpoint: str, tmp_path: Path
) -> None:
    """Records 1 and 2 share a key and DynamoDB refuses 2: record 1 is stored in a further
    round. Records 3-5 share another key and DynamoDB refuses 4 and 5; the write of 3 fails
    (injected AccessDeniedException), so the invocation ends before record 2 is dead-lettered.
    Record 2 is then not done, though a row of its key is stored: Lambda must retry from it."""
    _, dynamodb = clients
    tables: Tables = make_tables()
    tables.setup(shards=1)
    other = ("HW-OTHER", "2026-01-01T00:00:00.000002Z")
    payloads = [
        orjson.dumps(reading(0)),
        EARLIER,
        LATER_REFUSED,
        shared_key_payload("x-first", refused=False, key=other),
        shared_key_payload("x-second", refused=True, key=other),
        shared_key_payload("x-third", refused=True, key=other),
    ]
    event = synthetic_event(tables.stream, "shardId-000000000000", payloads)
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]

    deny_x_first = denied(lambda body: b'"x-first"' in body)
    with FaultProxy(moto_endpoint, [deny_x_first]) as proxy:
        env = {**tables.env, "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint}
        (answer,) = invoke([event], env, tmp_path)
    assert proxy.injected == {("BatchWriteItem", "error"): 1}
    assert rows_of(dynamodb, tables.table)[SHARED_KEY]["Data1"] == {"S": "earlier"}
    if seqs[2] not in letters_of(dynamodb, tables.dlq_table):
        assert answer["response"] == {"batchItemFailures": [{"itemIdentifier": seqs[2]}]}
    else:  # dead-lettered after all: then the retry starts at the failed write
        assert answer["response"] == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}

    (again,) = invoke([{"Records": event["Records"][2:]}], tables.env, tmp_path)
    assert again["response"] == {"batchItemFailures": []}
    assert rows_of(dynamodb, tables.table)[other]["Data1"] == {"S": "x-first"}
    assert set(letters_of(dynamodb, tables.dlq_table)) == {seqs[2], seqs[4], seqs[5]}


# --- the records table's key comes from the table (issue 10, case 6) -----------------------------


@pytest.mark.timeout(60)
def test_a_table_keyed_otherwise_than_the_handler_declares_stops_the_cold_start(
    make_tables: Any, clients: tuple[Any, Any], tmp_path: Path
) -> None:
    """TELEMAX_TABLE keyed by (orderID), the default handler declaring (hardwareID, Timestamp):
    the first invocation fails with one configuration line, and nothing is written."""
    _, dynamodb = clients
    tables: Tables = make_tables()
    tables.setup(shards=1)
    orders = create_orders_table(dynamodb, f"orders-{tables.table}")
    event = synthetic_event(tables.stream, "shardId-000000000000", [orjson.dumps(reading(1))])
    events_path, answers_path = tmp_path / "events.json", tmp_path / "answers.json"
    events_path.write_text(json.dumps([event]))
    env = {**os.environ, **tables.env, "TELEMAX_TABLE": orders}
    done = run(sys.executable, DRIVER, events_path, answers_path, "60000", env=env, timeout=90)
    assert done.returncode != 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = (
        "TELEMAX_HANDLER consumer.feeds.telemax:to_item declares key (hardwareID, Timestamp)"
        f" but table '{orders}' is keyed by (orderID)"
    )
    assert f"kernel.errors.ConfigError: {line}\n" in done.stderr, done.stderr[-3000:]
    assert scan(dynamodb, orders) == [] and scan(dynamodb, tables.dlq_table) == []


def sqs_event(queue: str, bodies: list[bytes]) -> dict[str, Any]:
    """What Lambda hands the function for an SQS queue."""
    return {
        "Records": [
            {
                "messageId": f"msg-{n:04d}",
                "receiptHandle": f"rh-{n}",
                "body": body.decode(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764676800000"},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
            }
            for n, body in enumerate(bodies)
        ]
    }


def test_an_sqs_event_is_stored_and_answers_with_the_messages_not_done(
    make_tables: Any, clients: tuple[Any, Any], moto_endpoint: str, tmp_path: Path
) -> None:
    _, dynamodb = clients
    tables: Tables = make_tables()
    tables.setup(shards=1)
    marker = "HW-REFUSED"
    bodies = [b"{oops"] + [orjson.dumps(reading(i)) for i in range(30)]
    bodies[12] = orjson.dumps(reading(11, hardwareID=marker))
    event = sqs_event("orders-queue", bodies)
    with FaultProxy(moto_endpoint, [denied(lambda body: marker.encode() in body)]) as proxy:
        env = {
            **tables.env,
            "AWS_ENDPOINT_URL_DYNAMODB": proxy.endpoint,
            "TELEMAX_WRITE_CONCURRENCY": "1",
        }
        (answer,) = invoke([event], env, tmp_path)
    failed = [f["itemIdentifier"] for f in answer["response"]["batchItemFailures"]]
    # the first request (messages 1-25, with the marker) was denied, which stops the write:
    # every item message comes back; the undecodable one is done (dead-lettered)
    assert failed == [f"msg-{n:04d}" for n in range(1, 31)]
    (letter,) = scan(dynamodb, tables.dlq_table)
    assert letter["shardId"] == {"S": "sqs:orders-queue"}
    assert letter["sequenceNumber"] == {"S": "msg-0000"} and letter["reason"] == {"S": "not_json"}

    fifo = sqs_event("orders.fifo", bodies[1:4])
    (again,) = invoke([fifo], tables.env, tmp_path)
    assert again["response"] == {"batchItemFailures": []}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fast_path", [True, False], ids=["lean", "aiobotocore"])
def test_lambda_archives_each_record_once_when_retries_start_inside_an_object(
    fast_path: bool, make_tables: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    """An invocation archives 120 records and dies before answering; Lambda retries the batch
    bisected (60), then goes on from record 60 with a bigger batch: nothing twice, nothing
    missing, dead letters in their own objects. The retries find the objects by a listing and
    read one back: on the lean S3, or on aiobotocore's."""
    tables: Tables = make_tables()
    tables.setup(shards=1)
    bucket = f"archive-{tables.table.lower()}"
    s3 = local_client("s3", moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    payloads = [orjson.dumps(reading(i)) for i in range(150)]
    for bad in (7, 64, 130):
        payloads[bad] = b"{oops"
    event = synthetic_event(tables.stream, "shardId-000000000000", payloads)["Records"]
    env = {**tables.env, "TELEMAX_ARCHIVE_BUCKET": bucket, "TELEMAX_ARCHIVE_PREFIX": "arch/"}
    env["TELEMAX_FAST_PATH"] = str(fast_path).lower()
    batches = [event[:120], event[:60], event[60:150]]  # the first one's answer was lost
    events = [{"Records": batch} for batch in batches]
    answers = invoke(events, env, tmp_path, fast_path=fast_path, lean=fast_path)
    assert [a["response"] for a in answers] == [{"batchItemFailures": []}] * 3
    found = archived(s3, bucket)
    assert sorted(line["record"]["Data2"] for line in found["records"]) == sorted(
        reading(i)["Data2"] for i in range(150) if i not in (7, 64, 130)
    )
    assert sorted(line["sequenceNumber"] for line in found["deadletters"]) == sorted(
        event[i]["kinesis"]["sequenceNumber"] for i in (7, 64, 130)
    )
    assert {line["reason"] for line in found["deadletters"]} == {"not_json"}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith("arch/") and "-upto-" in k and k.endswith(".json.gz") for k in keys)
    assert len(keys) == 4, keys  # records and letters of the first invocation, of the last


def test_lambda_archives_each_sqs_message_once_when_sqs_delivers_it_again(
    make_tables: Any, clients: tuple[Any, Any], moto_endpoint: str, tmp_path: Path
) -> None:
    """The same messages in a second event (their deletion failed): stored again (the same
    rows), archived once; the claims live in the ledger."""
    _, dynamodb = clients
    tables: Tables = make_tables()
    tables.setup(shards=1)
    bucket, ledger = f"archive-{tables.table.lower()}", f"{tables.table}-ledger"
    local_client("s3", moto_endpoint).create_bucket(Bucket=bucket)
    dynamodb.create_table(
        TableName=ledger,
        KeySchema=[{"AttributeName": "alertId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "alertId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    bodies = [b"{oops"] + [orjson.dumps(reading(i)) for i in range(20)]
    first = sqs_event("orders-queue", bodies)
    again = {"Records": first["Records"][5:]}
    env = {
        **tables.env,
        "TELEMAX_ARCHIVE_BUCKET": bucket,
        "TELEMAX_ALERT_LEDGER_TABLE": ledger,
    }
    answers = invoke([first, again], env, tmp_path)
    assert [a["response"] for a in answers] == [{"batchItemFailures": []}] * 2
    found = archived(local_client("s3", moto_endpoint), bucket)
    assert sorted(line["sequenceNumber"] for line in found["records"]) == [
        f"msg-{n:04d}" for n in range(1, 21)
    ]
    assert [line["sequenceNumber"] for line in found["deadletters"]] == ["msg-0000"]
