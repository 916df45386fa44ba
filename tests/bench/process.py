"""The processes `make bench` runs and reads: the emulators, `consumer setup`, a worker's CPU
and peak RSS from /proc, its readiness, a tree of another revision exported and compiled."""

from __future__ import annotations

import compileall
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from devkit.local import aws_env, moto_process
from tests.conftest import emulator

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


@contextmanager
def emulators(log_dir: Path) -> Iterator[dict[str, str]]:
    """kinesalite and dynalite on 127.0.0.1; the environment that points a process at them."""
    with ExitStack() as stack:
        kinesis = stack.enter_context(emulator("kinesalite", log_dir))
        dynamodb = stack.enter_context(emulator("dynalite", log_dir))
        s3 = stack.enter_context(moto_process((log_dir / "moto.log").open("wb")))
        yield {
            **aws_env(kinesis.endpoint),
            "AWS_ENDPOINT_URL_KINESIS": kinesis.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.endpoint,
            "AWS_ENDPOINT_URL_S3": s3,
        }


def setup(env: dict[str, str]) -> None:
    """``consumer setup`` with ``env`` on top of ours: the stream and tables it names."""
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "setup"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def wait_cpu(proc: subprocess.Popen[str], timeout: float) -> float | None:
    """The CPU-seconds (user+sys) of a child once it exits (None: it did not in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return float(usage.ru_utime + usage.ru_stime)
        time.sleep(0.05)
    return None


def ready(port: int) -> bool:
    """The worker's /readyz answers 200 (its leases' heartbeat answered)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as answer:
            return bool(answer.status == 200)
    except OSError:  # not listening yet, or 503 (HTTPError is an OSError)
        return False


def proc_cpu(pid: int) -> float:
    """User+sys CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_usage(pid: int) -> tuple[float, int]:
    """(user+sys CPU seconds, peak RSS in KB) of a live process, from /proc."""
    cpu_s = proc_cpu(pid)
    hwm = next(
        line
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    return cpu_s, int(hwm.split()[1])


def worker_pid(wrapper: int) -> int:
    """The worker under py-spy: its child."""
    children = Path(f"/proc/{wrapper}/task/{wrapper}/children").read_text().split()
    return int(children[0]) if children else wrapper


# the worker's packages (what `pip install .` compiles in the image)
PACKAGES = ("consumer", "kernel", "producer", "devkit")


def compiled(tree: Path) -> None:
    """The bytecode of ``tree``'s packages, written beside them: as installed (pip compiles
    at install), a worker starts from bytecode. Where PYTHONDONTWRITEBYTECODE is set (this
    machine) and the tree is an editable install, each start compiled ~70 modules from
    source: ~0.08 CPU-s of the start-up figure (measured, interleaved, six times: importing the
    worker took 0.49 to 0.52 CPU-s from bytecode, 0.58 to 0.61 from source)."""
    for package in PACKAGES:
        if (tree / package).is_dir():
            compileall.compile_dir(tree / package, quiet=1)


def export(revision: str, into: Path) -> Path:
    """The tree of git ``revision``, exported into ``into`` (to run its worker); one line and
    exit when this clone does not hold it (a shallow clone: ``git fetch --unshallow``)."""
    into.mkdir(parents=True)
    found = subprocess.run(["git", "archive", revision], cwd=ROOT, capture_output=True)
    if found.returncode != 0:
        reason = found.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise SystemExit(f"bench: cannot export revision {revision!r}: {reason[0]}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=found.stdout, check=True)
    return into
