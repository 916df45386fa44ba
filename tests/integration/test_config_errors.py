"""Bad configuration stops start-up with one clear line naming the problem, never a traceback."""

from __future__ import annotations

import socket

import pytest

from devkit.local import free_port
from tests.support import Stack, make_stack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def configured(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """One stack set up for the refusals of this module: none of them writes anything."""
    stack = make_stack(
        tmp_path_factory.mktemp("configured"),
        kinesis_endpoint=moto_endpoint,
        dynamodb_endpoint=moto_endpoint,
    )
    stack.setup()
    return stack


def one_line_error(done: object) -> str:
    stderr: str = done.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert done.returncode != 0  # type: ignore[attr-defined]
    return lines[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TELEMAX_STREAM": "no-such-stream"}, "stream 'no-such-stream' does not exist"),
        ({"TELEMAX_TABLE": "NoSuchTable"}, "table 'NoSuchTable' does not exist"),
        ({"TELEMAX_LEASE_TABLE": "no-leases"}, "lease table 'no-leases' does not exist"),
        ({"TELEMAX_LEASE_DURATION_S": "abc"}, "TELEMAX_LEASE_DURATION_S='abc' is invalid"),
        ({"TELEMAX_LEASE_DURATION_S": "-1"}, "TELEMAX_LEASE_DURATION_S='-1' is invalid"),
        ({"TELEMAX_INITIAL_POSITION": "OLDEST"}, "TELEMAX_INITIAL_POSITION='OLDEST' is invalid"),
        ({"TELEMAX_METRICS_PORT": "70000"}, "TELEMAX_METRICS_PORT='70000' is invalid"),
        ({"TELEMAX_HANDLER": "nosuchmodule:fn"}, "TELEMAX_HANDLER: cannot load record handler"),
        ({"TELEMAX_INITIAL_POSITION": "AT_TIMESTAMP"}, "needs TELEMAX_INITIAL_TIMESTAMP"),
        ({"AWS_REGION": None, "AWS_DEFAULT_REGION": None}, "no AWS region configured"),
    ],
    ids=[
        "unknown-stream",
        "unknown-table",
        "unknown-lease-table",
        "not-a-number",
        "negative",
        "bad-choice",
        "bad-port",
        "bad-handler",
        "timestamp-missing",
        "no-region",
    ],
)
def test_run_refuses_bad_configuration(
    configured: Stack, env: dict[str, str | None], expected: str
) -> None:
    done = configured.cli("consumer", "run", environment=env)
    line = one_line_error(done)
    assert expected in line, line
    assert done.returncode == 2


@pytest.mark.parametrize("fast_path", ["true", "false"], ids=["lean", "aiobotocore"])
def test_a_missing_queue_stops_the_sqs_source(
    configured: Stack, moto_endpoint: str, fast_path: str
) -> None:
    url = f"{moto_endpoint}/123456789012/no-such-queue"
    env = {"TELEMAX_SOURCE": "sqs", "TELEMAX_QUEUE_URL": url, "TELEMAX_FAST_PATH": fast_path}
    done = configured.cli("consumer", "run", environment=env)
    line = one_line_error(done)
    assert f"SQS queue {url!r} does not exist" in line, line
    assert done.returncode == 2


def test_unreachable_endpoint(stack: Stack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    done = stack.cli(
        "consumer",
        "run",
        AWS_ENDPOINT_URL=dead,
        AWS_ENDPOINT_URL_KINESIS=dead,
        AWS_ENDPOINT_URL_DYNAMODB=dead,
        TELEMAX_AWS_MAX_ATTEMPTS="2",  # the default's retries only make the wait longer
        timeout=60,
    )
    line = one_line_error(done)
    assert "cannot reach" in line and "127.0.0.1" in line, line


def test_metrics_port_in_use(configured: Stack) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = configured.cli(
            "consumer", "run", TELEMAX_METRICS_PORT=str(port), TELEMAX_METRICS_HOST="127.0.0.1"
        )
    line = one_line_error(done)
    assert f"TELEMAX_METRICS_PORT={port}: cannot listen" in line, line


def test_flag_overrides_environment_and_is_validated(stack: Stack) -> None:
    done = stack.cli("consumer", "run", "--lease-duration-s", "zero")
    line = one_line_error(done)
    assert "--lease-duration-s='zero' is invalid" in line, line


def test_status_on_missing_lease_table(stack: Stack) -> None:
    done = stack.cli("consumer", "status", TELEMAX_LEASE_TABLE="nothing-here")
    line = one_line_error(done)
    assert "lease table 'nothing-here' does not exist" in line, line


def test_producer_on_missing_stream(stack: Stack) -> None:
    done = stack.cli("producer", "generate", "--count", "10", "--stream", "missing-stream")
    line = one_line_error(done)
    assert "stream 'missing-stream' does not exist" in line, line


def test_run_refuses_a_kcl_multi_stream_lease_table(stack: Stack) -> None:
    """A KCL multi-stream application's leases (account:stream:epoch:shardId) would each get
    a duplicate telemax lease: refused before any lease is created."""
    stack.setup()
    key = "123456789012:other-stream:1700000000:shardId-000000000000"
    stack.dynamodb.put_item(
        TableName=stack.lease_table,
        Item={"leaseKey": {"S": key}, "leaseCounter": {"N": "1"}, "checkpoint": {"S": "LATEST"}},
    )
    done = stack.cli("consumer", "run")
    line = one_line_error(done)
    assert "multi-stream KCL leases" in line and key in line, line
    assert done.returncode == 2
    leases = stack.dynamodb.scan(TableName=stack.lease_table)["Items"]
    assert [item["leaseKey"]["S"] for item in leases] == [key], "no lease created"
