"""The fault suite: a stack on kinesalite + dynalite whose *workers* talk to both through
fault-injecting proxies, while the test's own clients talk to the emulators directly."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.faultproxy import FaultProxy
from devkit.local import WorkerProcess
from tests.conftest import LEASE_DURATION_S, Emulator
from tests.support import Stack, kill_all, make_stack


@dataclasses.dataclass
class Faulty:
    stack: Stack
    kinesis: FaultProxy
    dynamodb: FaultProxy

    def worker(self, worker_id: str = "w1", **env: str) -> WorkerProcess:
        return self.stack.worker(
            worker_id,
            AWS_ENDPOINT_URL_KINESIS=self.kinesis.endpoint,
            AWS_ENDPOINT_URL_DYNAMODB=self.dynamodb.endpoint,
            **env,
        )


@pytest.fixture
def faulty(emulators: tuple[Emulator, Emulator], tmp_path: Path) -> Iterator[Faulty]:
    kinesis, dynamodb = emulators
    stack = make_stack(
        tmp_path,
        kinesis_endpoint=kinesis.endpoint,
        dynamodb_endpoint=dynamodb.endpoint,
        lease_duration_s=LEASE_DURATION_S,
    )
    with FaultProxy(kinesis.endpoint, seed=7) as kp, FaultProxy(dynamodb.endpoint, seed=8) as dp:
        yield Faulty(stack, kp, dp)
        kill_all(stack)
