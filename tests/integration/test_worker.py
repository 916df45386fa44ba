"""Worker processes against moto's server: store everything, resume, hand over, share."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest

from devkit.local import local_client
from kernel.kpl.decode import deaggregate, is_aggregated
from tests.support import Stack, archived, create_orders_table, keys_of, readings, wait_until

pytestmark = pytest.mark.timeout(90)


def events(worker_log: list[str], name: str) -> list[dict[str, object]]:
    parsed = [json.loads(line) for line in worker_log if line.startswith("{")]
    return [e for e in parsed if e.get("event") == name]


def test_every_record_is_stored_with_the_right_types(stack: Stack) -> None:
    stack.setup(shards=2)
    produced = readings(1500)
    stack.put(produced)
    worker = stack.worker("w1")
    wait_until(lambda: stack.count() >= 1500, 45, "1500 items in TELEMAX")

    items = stack.scan()
    assert keys_of(items) == {(r["hardwareID"], r["Timestamp"]) for r in produced}
    by_key = {(i["hardwareID"]["S"], i["Timestamp"]["S"]): i for i in items}
    for reading in produced[:50]:
        item = by_key[(reading["hardwareID"], reading["Timestamp"])]
        assert item["Data1"] == {"S": reading["Data1"]}
        assert float(item["Data2"]["N"]) == reading["Data2"]
        assert float(item["Data3"]["N"]) == reading["Data3"]
    assert stack.count(stack.dlq_table) == 0

    assert worker.stop() == 0
    metrics_free = events(worker.log_lines(), "worker_stopped")
    assert metrics_free, "the worker logs its stop"
    (clients,) = events(worker.log_lines(), "aws_clients")
    assert clients["lean"] is True, "the AWS configuration is all in the environment"


def test_the_generic_clients_still_carry_a_worker(stack: Stack) -> None:
    """TELEMAX_FAST_PATH=false: aiobotocore for every call, start-up checks included."""
    stack.setup(shards=2)
    stack.put(readings(300))
    worker = stack.worker("w1", TELEMAX_FAST_PATH="false")
    wait_until(lambda: stack.count() >= 300, 45, "300 items in TELEMAX")
    assert worker.stop() == 0
    (clients,) = events(worker.log_lines(), "aws_clients")
    assert clients == {**clients, "lean": False, "why": "TELEMAX_FAST_PATH is false"}


class CredentialsEndpoint(http.server.BaseHTTPRequestHandler):
    """A container's credentials endpoint (ECS, EKS Pod Identity) on 127.0.0.1: the stack's
    keys, valid for an hour; records each request's Authorization header."""

    tokens: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.tokens.append(self.headers.get("Authorization"))
        expiry = datetime.now(UTC) + timedelta(hours=1)
        body = json.dumps(
            {
                "AccessKeyId": "container-key",
                "SecretAccessKey": "container-secret",
                "Token": "container-token",
                "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_task_role_from_the_container_endpoint_takes_the_lean_start(stack: Stack) -> None:
    stack.setup(shards=2)
    stack.put(readings(300))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CredentialsEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        worker = stack.worker(
            "w1",
            AWS_ACCESS_KEY_ID="",
            AWS_SECRET_ACCESS_KEY="",
            AWS_CONTAINER_CREDENTIALS_FULL_URI=f"http://127.0.0.1:{server.server_port}/creds",
            AWS_CONTAINER_AUTHORIZATION_TOKEN="pod-identity-token",
        )
        wait_until(lambda: stack.count() >= 300, 45, "300 items in TELEMAX")
        assert worker.stop() == 0
    finally:
        server.shutdown()
        server.server_close()
    (clients,) = events(worker.log_lines(), "aws_clients")
    assert clients["lean"] is True, clients
    assert CredentialsEndpoint.tokens == ["pod-identity-token"], "fetched once, with the token"


def test_a_web_identity_exchanged_with_sts_takes_the_lean_start(
    stack: Stack, moto_endpoint: str, tmp_path: Path
) -> None:
    """IRSA: a projected token and a role, exchanged with STS (moto's) by the lean start."""
    stack.setup(shards=2)
    stack.put(readings(300))
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    worker = stack.worker(
        "w1",
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token),
        AWS_ROLE_ARN="arn:aws:iam::123456789012:role/telemax-worker",
        AWS_ENDPOINT_URL_STS=moto_endpoint,
    )
    wait_until(lambda: stack.count() >= 300, 45, "300 items in TELEMAX")
    assert worker.stop() == 0
    (clients,) = events(worker.log_lines(), "aws_clients")
    assert clients["lean"] is True, clients


@pytest.mark.parametrize("fast_path", ["true", "false"])
def test_the_archive_holds_every_record_once_on_either_client(
    stack: Stack, moto_endpoint: str, fast_path: str
) -> None:
    """The archive on: S3 on the lean path (fast path on, the environment qualifying) or
    botocore's; either way each record is in exactly one object."""
    bucket = f"archive-{fast_path}"
    s3 = local_client("s3", moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    stack.setup(shards=2)
    produced = readings(600)
    stack.put(produced)
    worker = stack.worker(
        "w1",
        TELEMAX_FAST_PATH=fast_path,
        TELEMAX_ARCHIVE_BUCKET=bucket,
        TELEMAX_ARCHIVE_PREFIX="telemax",
        TELEMAX_ARCHIVE_MAX_AGE_S="1",
        TELEMAX_ARCHIVE_MAX_BYTES="20000",
    )
    wait_until(lambda: stack.count() >= 600, 45, "600 items in TELEMAX")
    wait_until(lambda: len(archived(s3, bucket)["records"]) >= 600, 30, "600 archived lines")
    assert worker.stop() == 0
    lines = archived(s3, bucket)["records"]
    positions = [
        (line["shard"], line["sequenceNumber"], line["subSequenceNumber"]) for line in lines
    ]
    assert len(positions) == len(set(positions)) == 600
    (clients,) = events(worker.log_lines(), "aws_clients")
    assert clients["lean"] is (fast_path == "true"), clients


def test_sigterm_checkpoints_and_releases_every_lease(stack: Stack) -> None:
    stack.setup(shards=2)
    stack.put(readings(400))
    worker = stack.worker("w1")
    wait_until(lambda: stack.count() >= 400, 45, "400 items")
    wait_until(lambda: set(stack.owners().values()) == {"w1"}, 20, "w1 owns both leases")

    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=15) == 0
    assert time.monotonic() - started < 5, "drain, checkpoint and release are quick"

    leases = stack.leases()
    assert len(leases) == 2
    for item in leases.values():
        assert "leaseOwner" not in item, item
        assert item["checkpoint"]["S"].isdigit(), "checkpointed at a sequence number"
    log = worker.log_lines()
    assert len(events(log, "lease_released")) == 2
    assert events(log, "worker_drained")


def test_restart_resumes_from_checkpoint(stack: Stack) -> None:
    stack.setup(shards=2)
    stack.put(readings(1000))
    first = stack.worker("w1")
    wait_until(lambda: stack.count() >= 1000, 45, "first 1000 items")
    # Let an idle poll checkpoint, then stop (which checkpoints again).
    assert first.stop() == 0

    stack.put(readings(250, offset=1000))
    second = stack.worker("w2")
    wait_until(lambda: stack.count() >= 1250, 45, "all 1250 items")
    received = wait_until(
        lambda: second.metrics().get("telemax_records_received_total"), 10, "metrics"
    )
    # Reading resumes *at* each shard's checkpoint (the KCL's rule): the checkpointed record
    # comes back once per shard, and is not stored again; nothing before it is read.
    assert received == 250 + 2, "only the records after the checkpoint are read again"
    assert second.stop() == 0


def test_two_workers_split_the_shards_and_store_everything(stack: Stack) -> None:
    stack.setup(shards=4)
    a = stack.worker("wa")
    b = stack.worker("wb")

    def balanced() -> bool:
        owners = list(stack.owners().values())
        return len(owners) == 4 and owners.count("wa") == 2 and owners.count("wb") == 2

    wait_until(balanced, 30, "two leases each")
    produced = readings(2000)
    stack.put(produced)
    wait_until(lambda: stack.count() >= 2000, 60, "2000 items")
    assert keys_of(stack.scan()) == {(r["hardwareID"], r["Timestamp"]) for r in produced}

    # a batch is in the table a moment before its worker has its answer and counts it
    # (CI once scraped 979 + 950 with every item stored): the counters catch up, then hold
    def written() -> tuple[float, float]:
        name = "telemax_records_written_total"
        return a.metrics().get(name, 0), b.metrics().get(name, 0)

    wait_until(lambda: sum(written()) >= 2000, 10, "every write counted")
    got_a, got_b = written()
    assert got_a > 0 and got_b > 0
    assert a.stop() == 0 and b.stop() == 0


def test_bad_records_are_dead_lettered_and_the_shard_moves_on(stack: Stack) -> None:
    stack.setup(shards=1)
    good = readings(20)
    bad = [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"hardwareID": "x"}',
        b'{"hardwareID": "x", "Timestamp": "yesterday"}',
        b'{"hardwareID": 7, "Timestamp": "2026-01-01T00:00:00Z"}',
    ]
    stack.put(good[:10])
    # moto accepts empty data: the worker must cope with whatever the stream holds.
    stack.put([b for b in bad if b], key="bad")
    stack.put(good[10:])
    worker = stack.worker("w1")
    wait_until(
        lambda: stack.count() >= 20 and stack.count(stack.dlq_table) >= 6,
        45,
        "good items stored and bad ones dead-lettered",
    )
    letters = stack.scan(stack.dlq_table)
    reasons = sorted(item["reason"]["S"] for item in letters)
    assert reasons == sorted(
        ["not_json", "invalid_utf8", "not_object", "missing_field", "bad_timestamp", "wrong_type"]
    )
    for item in letters:
        assert item["sequenceNumber"]["S"].isdigit() and item["shardId"]["S"]
        assert item["data"]["B"] and item["detail"]["S"]
    dead = wait_until(
        lambda: worker.metrics().get("telemax_records_dead_lettered_total"),
        10,
        "dead-letter metric",
    )
    assert dead == 6
    assert worker.stop() == 0
    (lease,) = stack.leases().values()
    last_sequence = stack.kinesis.get_records(
        ShardIterator=stack.kinesis.get_shard_iterator(
            StreamName=stack.stream,
            ShardId=lease["leaseKey"]["S"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
    )["Records"][-1]["SequenceNumber"]
    assert lease["checkpoint"]["S"] == last_sequence, "the checkpoint passed the bad records"


def test_status_and_http_endpoints(stack: Stack) -> None:
    stack.setup(shards=2)
    worker = stack.worker("w1")
    base = f"http://127.0.0.1:{worker.metrics_port}"
    wait_until(worker.ready, 20, "/readyz 200")
    with urllib.request.urlopen(base + "/healthz", timeout=1) as answer:
        assert answer.status == 200
    wait_until(lambda: worker.metrics().get("telemax_leases_held") == 2, 10, "2 leases held")
    metrics = worker.metrics()
    for name in (
        "telemax_leases_held",
        "telemax_records_received_total",
        "telemax_batch_write_seconds_count",
        "telemax_leases_taken_total",
        "telemax_leader",
        "telemax_last_beat_timestamp_seconds",
        "telemax_lease_table_requests_total",
    ):
        assert name in metrics, name

    status = stack.cli("consumer", "status")
    assert status.returncode == 0, status.stderr
    leases, members = status.stdout.split("\n\n")
    lines = leases.splitlines()
    assert "2 leases, 2 owned, 1 workers" in lines[0]
    assert lines[1].split()[:3] == ["shard", "owner", "checkpoint"]
    assert sum(1 for line in lines[2:] if " w1 " in line) == 2
    assert members.splitlines()[0].startswith("leader: w1 (counter ")
    assert members.splitlines()[2].split()[0] == "w1"
    assert worker.stop() == 0


def test_kpl_aggregated_records_are_de_aggregated_and_all_stored(stack: Stack) -> None:
    stack.setup(shards=2)
    done = stack.cli(
        "producer",
        "generate",
        "--count",
        "3000",
        "--aggregate",
        # Small aggregates: dozens per shard, so each shard surely ends with one (only the
        # producer's last flush may travel plain, when it holds a single user record).
        "--aggregate-max-bytes",
        "4096",
        "--concurrency",
        "1",
        "--quiet",
        "--seed",
        "3",
    )
    assert done.returncode == 0, done.stderr
    assert "KPL-aggregated" in done.stdout
    worker = stack.worker("w1")
    wait_until(lambda: stack.count() >= 3000, 45, "3000 user records stored")
    assert stack.count() == 3000 and stack.count(stack.dlq_table) == 0
    # Aggregation is counted on the stream (distinct Kinesis records), not on the worker's
    # received counter: a slow backend that lets a lease lapse makes a successor read some
    # records again, which is right and must not fail this test.
    kinesis_records = sum(len(records) for records in stack.shard_records().values())
    assert kinesis_records < 3000 / 10, "far fewer Kinesis records than user records"
    assert worker.metrics()["telemax_records_received_total"] >= kinesis_records
    # Each shard's checkpoint is its last user record: the last Kinesis record's sequence
    # number and, for an aggregate, the index of its last user record.
    expected = {}
    for shard, records in stack.shard_records().items():
        last = records[-1]
        users = deaggregate(last["Data"], last["PartitionKey"])
        expected[shard] = (
            last["SequenceNumber"],
            len(users) - 1 if is_aggregated(last["Data"]) else 0,
        )

    def checkpoints() -> dict[str, tuple[str, int]]:
        return {
            key: (lease["checkpoint"]["S"], int(lease["checkpointSubSequenceNumber"]["N"]))
            for key, lease in stack.leases().items()
        }

    # Waited for while the worker runs (the periodic checkpoint), not read right after the
    # stop: on a loaded machine the stop's last checkpoint may be refused as a lease the
    # worker no longer trusts, which is right and leaves the periodic one to prove this.
    wait_until(lambda: checkpoints() == expected, 30, "checkpoints at the last user records")
    assert any(sub > 0 for _, sub in checkpoints().values()), "a checkpoint inside an aggregate"
    assert worker.stop() == 0

    # A restart resumes at the aggregated checkpoint record and skips every user record done.
    again = stack.worker("w2")
    time.sleep(3)
    assert again.metrics().get("telemax_records_written_total", 0) == 0
    assert again.stop() == 0


def test_the_key_schema_comes_from_the_table(stack: Stack) -> None:
    """Issue 10, case 6: a handler writing to a table keyed otherwise than TELEMAX."""
    stack.setup(shards=2)
    orders = create_orders_table(stack.dynamodb, f"orders-{stack.table}")
    produced = readings(300)
    stack.put(produced)
    worker = stack.worker("w1", TELEMAX_TABLE=orders, TELEMAX_HANDLER="tests.handlers:as_order")
    wait_until(lambda: stack.count(orders) >= 300, 45, "300 orders stored")
    assert stack.count(stack.dlq_table) == 0, "nothing dead-lettered as missing_key"
    assert worker.stop() == 0


def test_a_handler_declaring_another_key_stops_start_up(stack: Stack) -> None:
    stack.setup(shards=1)
    orders = create_orders_table(stack.dynamodb, f"orders-{stack.table}")
    done = stack.cli("consumer", "run", TELEMAX_TABLE=orders)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].endswith(
        "TELEMAX_HANDLER consumer.feeds.telemax:to_item declares key (hardwareID, Timestamp)"
        f" but table '{orders}' is keyed by (orderID)"
    ), lines[0]
