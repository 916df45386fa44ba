"""A private network namespace for emulators that listen on every interface (kinesis-local):
nothing they open is reachable from the machine's own network.

:class:`PrivateNetwork` holds a namespace open (a sleeping process in it, its loopback up),
starts processes in it (``nsenter``) and runs code in it: a thread that joined the namespace
(``setns``, through libc: Python 3.11 has no ``os.setns``) makes its sockets there, and the
processes it starts are there too. Root only (CAP_SYS_ADMIN); nothing here is used by a
production worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from devkit.local import LOCALHOST, free_port, stop_process

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
ROOT = Path(__file__).resolve().parent.parent
KINESIS_LOCAL = ROOT / ".emulators" / "node_modules" / "kinesis-local"
SERVE = ROOT / "tests" / "emulators" / "serve.js"
KINESIS_LOCAL_PORT = 4568  # its plain port: HTTP/1.1 and h2c (HTTP/2 with prior knowledge)
KINESIS_LOCAL_TLS_PORT = 4567  # HTTPS: ALPN h2 or http/1.1, KINESIS_MOCK_CERT_PATH's pair


def unavailable() -> str | None:
    """Why a private network cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "private network namespaces need root"
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    return f"missing: {', '.join(missing)}" if missing else None


class PrivateNetwork:
    def __init__(self, timeout: float = 10.0) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec sleep 86400"],
            start_new_session=True,
        )
        self.pid = self._holder.pid
        deadline = time.monotonic() + timeout
        mine = os.readlink("/proc/self/ns/net")
        while not self._ready(mine):
            if self._holder.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the private network namespace did not come up")
            time.sleep(0.02)

    def _ready(self, mine: str) -> bool:
        try:
            if os.readlink(f"/proc/{self.pid}/ns/net") == mine:
                return False
        except OSError:
            return False
        shown = subprocess.run(
            ["nsenter", "-t", str(self.pid), "-n", "--", "ip", "-o", "link", "show", "lo"],
            capture_output=True,
            text=True,
            check=False,
        )
        return ",UP" in shown.stdout

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """A process in the namespace (``nsenter`` execs it: its pid is the process's)."""
        return subprocess.Popen(["nsenter", "-t", str(self.pid), "-n", "--", *argv], **kwargs)

    def run(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """``fn()`` in a thread that joined the namespace; its result, or its exception."""
        outcome: dict[str, Any] = {}

        def joined() -> None:
            try:
                join(self.pid)
                outcome["value"] = fn()
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=joined, name=f"netns-{self.pid}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"not done within {timeout} s in the private network")
        if "error" in outcome:
            raise outcome["error"]
        value: T = outcome["value"]
        return value

    def reachable(self, port: int) -> bool:
        """Something accepts connections on 127.0.0.1:``port`` inside the namespace."""

        def connect() -> bool:
            with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), 0.5):
                return True
            return False

        return self.run(connect)

    def wait_for_port(self, port: int, timeout: float, proc: subprocess.Popen[Any]) -> None:
        deadline = time.monotonic() + timeout
        while not self.reachable(port):
            if proc.poll() is not None:
                raise RuntimeError(f"the process for port {port} exited ({proc.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout} s")
            time.sleep(0.1)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._holder.pid, signal.SIGKILL)
        self._holder.wait()


def join(pid: int) -> None:
    """Move the calling thread into ``pid``'s network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns: {os.strerror(errno)}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def private_network() -> Iterator[PrivateNetwork]:
    network = PrivateNetwork()
    try:
        yield network
    finally:
        network.close()


@contextlib.contextmanager
def serving(
    network: PrivateNetwork,
    argv: Sequence[str],
    port: int,
    log: IO[bytes],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
) -> Iterator[str]:
    """A server process in ``network``, once it accepts connections on ``port``; its
    endpoint. Stopped (SIGKILL after 3 s) and reaped on exit."""
    proc = network.popen(
        argv,
        env={**os.environ, **env},
        cwd=str(cwd),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        network.wait_for_port(port, timeout, proc)
        yield f"http://{LOCALHOST}:{port}"
    finally:
        stop_process(proc, timeout=3)


def kinesis_local(
    network: PrivateNetwork, log: IO[bytes], env: Mapping[str, str] | None = None
) -> contextlib.AbstractContextManager[str]:
    """kinesis-local in ``network`` (durations 0 unless ``env`` says otherwise); its plain
    endpoint, which speaks h2c too (it may ignore SIGTERM after many subscriptions: measured,
    hence the SIGKILL)."""
    settings = {
        "KINESIS_MOCK_CERT_PATH": str(KINESIS_LOCAL / "server.json"),
        "KINESIS_MOCK_PLAIN_PORT": str(KINESIS_LOCAL_PORT),
        "CREATE_STREAM_DURATION": "0ms",
        "REGISTER_STREAM_CONSUMER_DURATION": "0ms",
        "START_STREAM_ENCRYPTION_DURATION": "0ms",  # its deregistration reads this one
        "SPLIT_SHARD_DURATION": "0ms",
        "LOG_LEVEL": "WARN",
        **(env or {}),
    }
    argv = ["node", str(KINESIS_LOCAL / "main.js")]
    return serving(
        network, argv, KINESIS_LOCAL_PORT, log, env=settings, cwd=KINESIS_LOCAL, timeout=60
    )


def dynalite(
    network: PrivateNetwork, port: int, log: IO[bytes]
) -> contextlib.AbstractContextManager[str]:
    """dynalite on 127.0.0.1:``port`` in ``network``; its endpoint."""
    modules = {"NODE_PATH": str(ROOT / ".emulators" / "node_modules")}
    argv = ["node", str(SERVE), "dynalite", str(port)]
    return serving(network, argv, port, log, env=modules, cwd=SERVE.parent, timeout=30)


@contextlib.contextmanager
def fanout_backends(
    logs: Path, kinesis_env: Mapping[str, str] | None = None
) -> Iterator[tuple[PrivateNetwork, str, str]]:
    """A private network with kinesis-local (``kinesis_env`` added to its settings) and
    dynalite in it: (network, Kinesis plain endpoint, DynamoDB endpoint); logs in ``logs``."""
    with contextlib.ExitStack() as stack:
        network = stack.enter_context(private_network())
        kinesis_log = stack.enter_context((logs / "kinesis-local.log").open("wb"))
        dynamodb_log = stack.enter_context((logs / "dynalite.log").open("wb"))
        kinesis = stack.enter_context(kinesis_local(network, kinesis_log, kinesis_env))
        dynamodb = stack.enter_context(dynalite(network, free_port(), dynamodb_log))
        yield network, kinesis, dynamodb
