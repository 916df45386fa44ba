"""Integration fixtures: one moto server process per session on 127.0.0.1, and a fresh stack
(unique stream and table names) per test."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.certs import make_certificates
from devkit.local import moto_process
from devkit.netns import KINESIS_LOCAL, PrivateNetwork, fanout_backends, unavailable
from tests.support import Stack, keys_of, kill_all, make_stack, readings, wait_until

# Older imports name these here; they live in tests.support.
__all__ = ["Stack", "keys_of", "readings", "wait_until"]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    with moto_process(log) as endpoint:
        yield endpoint
    log.close()


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path, kinesis_endpoint=moto_endpoint, dynamodb_endpoint=moto_endpoint)
    yield s
    kill_all(s)


def require_kinesis_local() -> None:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    if not (KINESIS_LOCAL / "main.js").is_file():
        pytest.fail("kinesis-local is not installed: run `make emulators` (make test does it)")


@dataclasses.dataclass(frozen=True)
class Backends:
    """kinesis-local and dynalite in a private network, once a session (tests use names of
    their own): kinesis-local serves HTTPS with a certificate from ``ca``'s private CA."""

    network: PrivateNetwork
    kinesis: str  # its plain endpoint (h2c and HTTP/1.1)
    dynamodb: str
    ca: Path


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    require_kinesis_local()
    logs = tmp_path_factory.mktemp("fanout-backends")
    certs = make_certificates(logs / "certs")
    config = {"KINESIS_MOCK_CERT_PATH": str(certs.kinesis_local_config(logs))}
    with fanout_backends(logs, kinesis_env=config) as (network, kinesis, dynamodb):
        yield Backends(network, kinesis, dynamodb, certs.ca)
