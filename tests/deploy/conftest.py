"""Fixtures of the deployment tests: the tools' virtualenv, and for the Lambda tests a moto
server process on 127.0.0.1 with per-test stream and table names (no botocore mocks)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devkit.local import aws_env, local_client, moto_process
from tests.support import provision

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_VENV = ROOT / os.environ.get("DEPLOY_VENV", ".venv-deploy")  # absolute stays absolute


def tool(name: str) -> Path:
    """A validation tool from the deploy virtualenv (``make deploy-tools`` installs it)."""
    path = DEPLOY_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deploy-tools` (make test does it)")
    return path


def run(*args: str | Path, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


@dataclasses.dataclass
class Tables:
    """A stream and the four tables on the local endpoint, named for one test."""

    env: dict[str, str]
    stream: str
    table: str
    lease_table: str
    dlq_table: str
    member_table: str

    def setup(self, shards: int = 2) -> None:
        provision(self.env, shards)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with (tmp_path_factory.mktemp("moto") / "moto.log").open("wb") as log, moto_process(log) as url:
        yield url


@pytest.fixture
def make_tables(moto_endpoint: str) -> Any:
    def make(stream: str | None = None, **extra_env: str) -> Tables:
        suffix = uuid.uuid4().hex[:8]
        names = {
            "TELEMAX_STREAM": stream or f"stream-{suffix}",
            "TELEMAX_TABLE": f"TELEMAX-{suffix}",
            "TELEMAX_LEASE_TABLE": f"leases-{suffix}",
            "TELEMAX_DLQ_TABLE": f"deadletter-{suffix}",
            "TELEMAX_MEMBER_TABLE": f"members-{suffix}",
        }
        env = {**aws_env(moto_endpoint), **names, **extra_env}
        return Tables(
            env,
            names["TELEMAX_STREAM"],
            names["TELEMAX_TABLE"],
            names["TELEMAX_LEASE_TABLE"],
            names["TELEMAX_DLQ_TABLE"],
            names["TELEMAX_MEMBER_TABLE"],
        )

    return make


@pytest.fixture
def clients(moto_endpoint: str) -> tuple[Any, Any]:
    """Synchronous (kinesis, dynamodb) botocore clients for setting up and asserting."""
    return local_client("kinesis", moto_endpoint), local_client("dynamodb", moto_endpoint)


def scan(dynamodb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = dynamodb.scan(**kwargs)
        items.extend(page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
