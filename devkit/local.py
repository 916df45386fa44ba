"""Local backends and worker processes, shared by ``demo`` and the tests.

Everything binds 127.0.0.1. Nothing here is used by a production worker.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def aws_env(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    """Standard AWS variables pointing every client at a local endpoint."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        # A developer's own ~/.aws files must not leak into local runs.
        "AWS_CONFIG_FILE": "/nonexistent/telemax/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/telemax/aws-credentials",
    }


@contextmanager
def moto_in_process() -> Iterator[str]:
    """moto's server on a free 127.0.0.1 port in this process; yields the endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise RuntimeError("the embedded backend needs moto: pip install 'telemax[demo]'") from None
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def moto_process(log: IO[bytes] | None = None) -> Iterator[str]:
    """moto's server as a child process on a free 127.0.0.1 port; yields the endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)],
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    endpoint = f"http://{LOCALHOST}:{port}"
    try:
        wait_for_http(endpoint + "/moto-api/", timeout=30, proc=proc)
        yield endpoint
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it is still there after ``timeout``; the exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for_http(url: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> None:
    """Wait until something answers HTTP at ``url`` (any status: it is listening)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {proc.returncode} before answering"
                ) from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.05)


def metrics_text(port: int, timeout: float = 2.0) -> str:
    """The Prometheus text a local process serves on ``port``."""
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=timeout) as answer:
        return str(answer.read().decode())


def sample(text: str, name: str, **labels: str) -> float:
    """A sample in Prometheus text, summed over the series that carry ``labels``; 0 if none."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def scrape(url: str, timeout: float = 2.0, names: Sequence[str] = ()) -> dict[str, float]:
    """Prometheus text at ``url`` -> {sample name: value summed over labels}; ``names``:
    only those samples (``name[]``: the worker answers with them alone, cheaply)."""
    if names:
        url += "?" + urllib.parse.urlencode([("name[]", name) for name in names])
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        text = answer.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            totals[s.name] = totals.get(s.name, 0.0) + s.value
    return totals


def local_client(service: str, endpoint: str) -> Any:
    """A plain botocore client for a local emulator (test credentials, us-east-1)."""
    import botocore.session  # the dev kit's; the worker itself never needs a sync client

    return botocore.session.get_session().create_client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def scrape_or_nothing(
    port: int, timeout: float = 1.0, names: Sequence[str] = ()
) -> dict[str, float]:
    """A local process's metrics, or {} while its server is not up (or the process is gone)."""
    try:
        return scrape(f"http://{LOCALHOST}:{port}/metrics", timeout=timeout, names=names)
    except OSError:
        return {}


class WorkerProcess:
    """``python -m consumer run`` as a child process with its own metrics port and log file."""

    def __init__(
        self,
        worker_id: str,
        env: Mapping[str, str],
        log_dir: Path,
        popen: Callable[..., subprocess.Popen[Any]] = subprocess.Popen,
    ) -> None:
        """``popen`` starts it (``PrivateNetwork.popen``: in a private network)."""
        self.worker_id = worker_id
        self.metrics_port = free_port()
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = self.log_path.open("ab")
        full_env = {
            **os.environ,
            **env,
            "TELEMAX_WORKER_ID": worker_id,
            "TELEMAX_METRICS_PORT": str(self.metrics_port),
            "TELEMAX_METRICS_HOST": LOCALHOST,
        }
        self.proc = popen(
            [sys.executable, "-m", "consumer", "run"],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def metrics_url(self) -> str:
        return f"http://{LOCALHOST}:{self.metrics_port}/metrics"

    def metrics(self) -> dict[str, float]:
        """Current metrics, or {} while the server is not up (or the process is gone)."""
        return scrape_or_nothing(self.metrics_port)

    def ready(self) -> bool:
        """Whether its ``/readyz`` answers 200 now (False while the server is not up)."""
        url = f"http://{LOCALHOST}:{self.metrics_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.flush()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        try:
            return stop_process(self.proc, timeout)
        finally:
            self._log.close()

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()
