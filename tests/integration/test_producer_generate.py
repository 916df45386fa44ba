"""`producer generate` on moto's Kinesis: rate accuracy, KPL aggregation through the stream
and back, the other schemas, throttling injected by an HTTP proxy, one-line errors.

One PutRecords call in flight wherever counts must be exact: moto loses records under
concurrent PutRecords (see EMULATORS.md).
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from consumer.feeds.telemax import to_item
from devkit.local import LOCALHOST
from kernel.kpl.decode import deaggregate, is_aggregated
from tests.support import Stack

RATE = 500
DURATION_S = 5


@pytest.fixture(autouse=True)
def _no_inherited_producer_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TELEMAX_PRODUCER_METRICS_PORT", "TELEMAX_TAIL_STATE_FILE"):
        monkeypatch.delenv(name, raising=False)


def summary_line(stdout: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith("telemax-producer: ")]
    return line


@pytest.mark.timeout(45)
def test_rate_is_accurate_over_five_seconds(stack: Stack) -> None:
    stack.setup(shards=1)
    done = stack.cli(
        "producer",
        "generate",
        *("--duration", str(DURATION_S), "--rate", str(RATE), "--concurrency", "1", "--quiet"),
        timeout=40,
    )
    assert done.returncode == 0, done.stderr
    records = stack.stream_records()
    expected = RATE * DURATION_S
    assert abs(len(records) - expected) <= 0.1 * expected, summary_line(done.stdout)
    arrivals: list[datetime] = [r["ApproximateArrivalTimestamp"] for r in records]
    span = (arrivals[-1] - arrivals[0]).total_seconds()
    # Chunks go every 100 ms: the first and last chunk add one step to what the span misses.
    measured = len(records) / (span + 0.1)
    assert abs(measured - RATE) <= 0.1 * RATE, f"{measured:.1f} records/s over {span:.2f} s"
    halves = [a for a in arrivals if (a - arrivals[0]).total_seconds() < span / 2]
    assert abs(len(halves) - len(records) / 2) <= 0.1 * len(records) / 2, "sustained, not bursty"
    print(f"rate accuracy: {len(records)} records, {measured:.1f}/s measured vs {RATE}/s asked")


@pytest.mark.timeout(40)
@pytest.mark.parametrize("schema", ["telemax", "taxi"])
def test_aggregated_records_deaggregate_to_every_user_record(stack: Stack, schema: str) -> None:
    stack.setup(shards=2)
    count = 3000
    done = stack.cli(
        "producer",
        "generate",
        *("--count", str(count), "--schema", schema, "--aggregate", "--aggregate-max-bytes"),
        *("20000", "--concurrency", "1", "--seed", "11", "--quiet"),
    )
    assert done.returncode == 0, done.stderr
    line = summary_line(done.stdout)
    assert f"{count} of {count} acknowledged, 0 failed" in line
    assert "Kinesis records (KPL-aggregated)" in line
    kinesis_records = stack.stream_records()
    assert all(is_aggregated(r["Data"]) for r in kinesis_records)
    assert len(kinesis_records) < count / 10
    users = [u for r in kinesis_records for u in deaggregate(r["Data"], r["PartitionKey"])]
    assert len(users) == count
    decoded = [orjson.loads(u.data) for u in users]
    if schema == "telemax":
        for user in users:  # what the worker's default handler will do with each one
            assert to_item(user.data)["hardwareID"]["S"] == user.partition_key
        assert len({(d["hardwareID"], d["Timestamp"]) for d in decoded}) == count
    else:
        assert [u.partition_key for u in users] == [d["tripID"] for d in decoded]
        assert len({d["tripID"] for d in decoded}) == count


@pytest.mark.timeout(40)
def test_orders_include_large_records(stack: Stack) -> None:
    stack.setup(shards=2)
    done = stack.cli(
        "producer",
        "generate",
        *("--count", "300", "--schema", "orders", "--concurrency", "1", "--seed", "2", "--quiet"),
    )
    assert done.returncode == 0, done.stderr
    sizes = [len(r["Data"]) for r in stack.stream_records()]
    assert len(sizes) == 300
    assert max(sizes) > 15_000


@pytest.mark.timeout(30)
def test_missing_stream_is_one_line_and_exit_2(stack: Stack) -> None:
    done = stack.cli("producer", "generate", "--count", "5", "--stream", "no-such-stream")
    assert done.returncode == 2
    errors = [x for x in done.stderr.splitlines() if x.startswith("telemax-producer: error")]
    assert errors == [
        "telemax-producer: error: Kinesis stream 'no-such-stream' does not exist "
        "(create it with `telemax-consumer setup`)"
    ]


@contextmanager
def throttling_proxy(upstream: str, throttle_calls: int) -> Iterator[str]:
    """An HTTP proxy to ``upstream`` that answers the first ``throttle_calls`` PutRecords
    calls with ProvisionedThroughputExceededException, as Kinesis does when a shard is full."""
    target = urlsplit(upstream)
    state = {"throttled": 0}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                throttle = self.headers.get("X-Amz-Target", "").endswith(".PutRecords") and (
                    state["throttled"] < throttle_calls
                )
                state["throttled"] += throttle
            if throttle:
                self._answer(
                    400,
                    {"Content-Type": "application/x-amz-json-1.1"},
                    json.dumps(
                        {
                            "__type": "ProvisionedThroughputExceededException",
                            "message": "Rate exceeded for shard shardId-000000000000",
                        }
                    ).encode(),
                )
                return
            upstream_conn = http.client.HTTPConnection(target.netloc, timeout=20)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            upstream_conn.request("POST", self.path, body=body, headers=headers)
            answer = upstream_conn.getresponse()
            self._answer(answer.status, dict(answer.getheaders()), answer.read())
            upstream_conn.close()

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in {"content-length", "transfer-encoding", "connection"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer((LOCALHOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOCALHOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(40)
def test_throttling_is_retried_and_counted(stack: Stack) -> None:
    stack.setup(shards=1)
    upstream = stack.env.get("AWS_ENDPOINT_URL_KINESIS", stack.env["AWS_ENDPOINT_URL"])
    with throttling_proxy(upstream, throttle_calls=4) as proxy:
        done = stack.cli(
            "producer",
            "generate",
            *("--count", "1000", "--concurrency", "1", "--quiet"),
            AWS_ENDPOINT_URL_KINESIS=proxy,
        )
    assert done.returncode == 0, done.stderr
    line = summary_line(done.stdout)
    assert "1000 of 1000 acknowledged, 0 failed" in line
    throttled = int(line.split(" throttled")[0].rsplit(" ", 1)[1])
    assert throttled >= 500, line  # botocore retried some calls itself; we saw the rest
    assert len(stack.stream_records()) == 1000
