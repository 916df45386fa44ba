"""Fixtures for the suites on kinesalite and dynalite (npm, installed by `make emulators`):
one pair per session on 127.0.0.1, started only when a test asks for them. moto is not used
there: its Kinesis does not reshard faithfully and loses records under concurrent writers
(see EMULATORS.md)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import structlog

from devkit.local import LOCALHOST, free_port, stop_process, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
SERVE = ROOT / "tests" / "emulators" / "serve.js"
MODULES = ROOT / ".emulators" / "node_modules"
LEASE_DURATION_S = 6.0
RENEW_INTERVAL_S = LEASE_DURATION_S / 3


@dataclasses.dataclass(frozen=True)
class Emulator:
    endpoint: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def jump_clock(self, timeout: float = 10.0) -> None:
        """Move the emulator's clock 301 s forward (see tests/emulators/serve.js), and wait
        until it says so: node handles the signal between requests, not at once."""
        jumps = self.log_path.read_text().count("clock moved forward")
        self.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while self.log_path.read_text().count("clock moved forward") <= jumps:
            if time.monotonic() > deadline:
                raise TimeoutError("the emulator did not acknowledge the clock jump")
            time.sleep(0.02)


@contextmanager
def emulator(kind: str, log_dir: Path) -> Iterator[Emulator]:
    if not (MODULES / kind).is_dir():
        pytest.fail(f"{kind} is not installed: run `make emulators` (make test does it)")
    port = free_port()
    log_path = log_dir / f"{kind}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["node", str(SERVE), kind, str(port)],
            env={"NODE_PATH": str(MODULES), "PATH": "/usr/local/bin:/usr/bin:/bin"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://{LOCALHOST}:{port}"
        try:
            wait_for_http(endpoint, timeout=30, proc=proc)
            yield Emulator(endpoint, proc, log_path)
        finally:
            stop_process(proc)


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Emulator]]:
    logs = tmp_path_factory.mktemp("emulators")
    with ExitStack() as stack:
        kinesis = stack.enter_context(emulator("kinesalite", logs))
        dynamodb = stack.enter_context(emulator("dynalite", logs))
        yield kinesis, dynamodb


@pytest.fixture
def kinesalite(emulators: tuple[Emulator, Emulator]) -> Emulator:
    return emulators[0]


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    """A test that runs a command in process configures structlog for the process (a stream
    pytest captures and later closes): the next test starts from structlog's defaults."""
    yield
    structlog.reset_defaults()


# Where the long process tests live, longest first (measured: `pytest --durations`). Spread
# over processes (`make test`: pytest-xdist), the suite ends when its last long test does:
# starting them first lets the short ones fill the gaps instead of trailing them.
LONG_FIRST = (
    "tests/fleet/",
    "tests/faults/",
    "tests/integration/test_feeds.py",
    "tests/integration/test_sqs.py",
    "tests/integration/test_fanout",
    "tests/integration/",
    "tests/deploy/",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next(
            (n for n, prefix in enumerate(LONG_FIRST) if path.startswith(prefix)), len(LONG_FIRST)
        )

    items.sort(key=rank)  # stable: each file's tests keep their order
