"""Integration fixtures: one moto server process per session on 127.0.0.1, and a fresh stack
(unique stream and table names) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.local import moto_process
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
