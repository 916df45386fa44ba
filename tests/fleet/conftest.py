"""The fleet suite: a fresh stack per test on the session's kinesalite + dynalite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LEASE_DURATION_S, RENEW_INTERVAL_S, Emulator
from tests.support import Stack, kill_all, make_stack

__all__ = ["LEASE_DURATION_S", "RENEW_INTERVAL_S", "Emulator"]


@pytest.fixture
def fleet(emulators: tuple[Emulator, Emulator], tmp_path: Path) -> Iterator[Stack]:
    kinesis, dynamodb = emulators
    s = make_stack(
        tmp_path,
        kinesis_endpoint=kinesis.endpoint,
        dynamodb_endpoint=dynamodb.endpoint,
        lease_duration_s=LEASE_DURATION_S,
    )
    yield s
    kill_all(s)
