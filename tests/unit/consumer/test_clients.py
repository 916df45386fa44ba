"""Which clients a run speaks through (consumer.clients): lean or aiobotocore's, and the lean
path for the hot calls. Opening either kind makes no call, so no endpoint is needed."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

from consumer.clients import fast_path_for, records_writes, run_clients
from consumer.config import Settings
from devkit.local import aws_env
from kernel.aws import SQS_LONG_POLL_S

ENDPOINT = "http://127.0.0.1:9"  # never called


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole AWS configuration in the environment, as on ECS, Kubernetes or Lambda."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCOUNT_ID", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in aws_env(ENDPOINT).items():
        monkeypatch.setenv(name, value)


def opened(settings: Settings, **options: Any) -> tuple[MutableMapping[str, Any], bool]:
    """The ``aws_clients`` line of a run's clients, and whether the lean path was made."""

    async def run() -> tuple[MutableMapping[str, Any], bool]:
        with capture_logs() as logged:
            async with run_clients(settings, 4, **options) as clients:
                fast = await fast_path_for(clients, settings, 4)
                writer, preparer = records_writes(fast, clients.dynamodb)
                if fast is not None:  # the records' writes and their requests prepared ahead
                    assert (writer, preparer) == (fast.dynamodb.batch_write, fast.dynamodb.preparer)
                    fast.close()
                else:  # the generic client's writer, which prepares nothing
                    assert preparer is None and writer is not None
        (line,) = [entry for entry in logged if entry["event"] == "aws_clients"]
        return line, fast is not None

    return asyncio.run(run())


def test_a_run_of_kinesis_and_dynamodb_is_lean_with_the_fast_path() -> None:
    line, fast = opened(Settings())
    assert line["lean"] is True and "why" not in line
    assert fast


def test_the_fast_path_off_means_aiobotocore_and_no_lean_writes() -> None:
    line, fast = opened(Settings(fast_path=False))
    assert line == {"event": "aws_clients", "log_level": "info", "lean": False,
                    "why": "TELEMAX_FAST_PATH is false"}  # fmt: skip
    assert not fast


def test_an_archive_keeps_the_lean_clients_where_they_address_its_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lean S3 heads, puts, gets and lists (the Lambda handler's archive resumes inside
    an object): only a bucket botocore would address otherwise takes aiobotocore's."""
    archive = Settings(archive_bucket="telemax-archive")
    line, fast = opened(archive)
    assert line["lean"] is True and fast
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://minio.local:9000")
    line, fast = opened(archive)
    assert line["lean"] is False and line["why"] == (
        "S3 endpoint host 'minio.local' is for botocore to address"
    )
    assert fast


def test_an_sqs_source_is_lean_its_queue_and_its_alerts_too() -> None:
    """The queue's calls (long polls, deletes) on a lean JSON client whose read timeout
    outlasts a long poll; the alerts' SNS on the lean query client."""
    sqs = Settings(source="sqs", queue_url="https://sqs.eu-west-1.amazonaws.com/1/orders")
    alerting = Settings(source="sqs", queue_url=sqs.queue_url, alert_topic_arn="arn:t")

    async def extra_clients(settings: Settings) -> tuple[Any, Any]:
        async with run_clients(settings, 4) as clients:
            return clients.sqs, clients.extra.get("sns")

    queue, alerts = asyncio.run(extra_clients(sqs))
    assert type(queue).__name__ == "LeanClient" and alerts is None
    assert queue.meta.endpoint_url == ENDPOINT
    assert queue._api._pool._read_timeout == sqs.aws_read_timeout_s + SQS_LONG_POLL_S
    assert opened(sqs)[0]["lean"] is True
    queue, alerts = asyncio.run(extra_clients(alerting))
    assert type(queue).__name__ == "LeanClient" and type(alerts).__name__ == "LeanSns"
    line, fast = opened(alerting)
    assert line["lean"] is True and fast


def test_the_generic_queue_client_waits_a_long_poll_longer_than_the_others() -> None:
    """aiobotocore's clients: a receive's answer comes when its long poll ends, so the SQS
    client's read timeout is the others' plus the longest poll (tests/integration/test_sqs.py
    shows the race it removes)."""
    sqs = Settings(source="sqs", queue_url="https://sqs.eu-west-1.amazonaws.com/1/orders")
    generic = dataclasses.replace(sqs, fast_path=False)

    async def read_timeouts() -> tuple[float, float]:
        async with run_clients(generic, 4) as clients:
            configs: Any = (clients.sqs.meta.config, clients.dynamodb.meta.config)
            return configs[0].read_timeout, configs[1].read_timeout

    queue, others = asyncio.run(read_timeouts())
    assert others == generic.aws_read_timeout_s
    assert queue == generic.aws_read_timeout_s + SQS_LONG_POLL_S


def test_enhanced_fan_out_is_lean_too() -> None:
    """Its registration calls are Kinesis's JSON ones; its subscriptions, HTTP/2, are ours."""
    line, fast = opened(Settings(retrieval="fanout"))
    assert line["lean"] is True and fast
