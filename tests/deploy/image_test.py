"""Build the container image with podman and run it for real (``make image-test``, opt-in).

No container registry is reachable here (see shared/CONTAINERS.md): the base image is made
locally with debootstrap (Debian bookworm's python3 + python3-venv) and imported into podman,
then the Dockerfile is built with ``BASE_IMAGE`` pointing at it. The checks:

1. the image builds (both stages; pip reaches PyPI, through a mounted CA bundle if this
   machine's TLS needs one: ``PIP_CERT``/``SSL_CERT_FILE``);
2. ``--help`` runs with no network; the user is 10001:10001; there is no compiler;
3. the image's config has the exec-form entrypoint, ``run`` as command and a health check;
4. the worker runs from the image the way Kubernetes runs it (read-only root filesystem, a
   tmpfs /tmp, all capabilities dropped, no privilege escalation) against a moto server on
   127.0.0.1: becomes ready, stores produced records, passes its health check, and on SIGTERM
   drains, releases its leases and exits 0 within the grace period.

Every step has a time limit. The images and containers made here are removed at the end (the
base image too, unless it existed before or ``KEEP_BASE=1``). Needs root for podman; installs
podman, runc and debootstrap with apt-get when they are missing and apt-get is there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import botocore.session
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from devkit.local import LOCALHOST, aws_env, free_port, moto_process  # noqa: E402

BASE = "localhost/debian-python:bookworm"
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
GRACE_S = 10
RECORDS = 300


def sh(args: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(args)[:200], flush=True)
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    runtime = shutil.which("runc") or "runc"
    return sh(["podman", "--runtime", runtime, *args], timeout=timeout)


def ensure_tools() -> None:
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(f"image-test needs {', '.join(missing)}: apt-get install podman runc debootstrap")
    for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        done = sh(step, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            sys.exit(done.stdout[-2000:] + done.stderr[-2000:])


def debian_mirror() -> str:
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def ensure_base() -> bool:
    """Make the base image unless it exists; True when this run made it."""
    if podman("image", "exists", BASE).returncode == 0:
        return False
    with tempfile.TemporaryDirectory() as rootfs:
        done = sh(
            [
                "debootstrap", "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm", rootfs, debian_mirror(),
            ],
            timeout=600,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit("debootstrap failed:\n" + done.stdout[-3000:] + done.stderr[-3000:])
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", BASE], stdin=tar.stdout, capture_output=True, timeout=300
        )
        tar.wait(timeout=60)
        if imported.returncode != 0:
            sys.exit("podman import failed: " + imported.stderr.decode()[-2000:])
    return True


def build(tag: str) -> None:
    args = ["build", "--isolation", "chroot", *LIMITS, "--format", "docker", "--layers=false"]
    args += ["--build-arg", f"BASE_IMAGE={BASE}", "-t", tag]
    ca = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if ca and Path(ca).is_file():
        args += [
            "--volume",
            f"{ca}:/run/build-ca.crt:ro",
            "--build-arg",
            "PIP_CERT=/run/build-ca.crt",
        ]
    if os.environ.get("PIP_INDEX_URL"):
        args += ["--build-arg", f"PIP_INDEX_URL={os.environ['PIP_INDEX_URL']}"]
    started = time.monotonic()
    done = podman(*args, str(ROOT), timeout=900)
    if done.returncode != 0:
        raise AssertionError("build failed:\n" + done.stdout[-4000:] + done.stderr[-4000:])
    print(f"built {tag} in {time.monotonic() - started:.0f} s", flush=True)


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, check: Callable[[], None]) -> None:
        try:
            check()
        except Exception as exc:  # report every check, then fail the run
            self.failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            self.passed += 1
            print(f"PASS {name}", flush=True)


def check_help(tag: str) -> None:
    done = podman("run", "--rm", "--network=none", *LIMITS, tag, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: telemax-consumer" in done.stdout


def check_user_and_no_compilers(tag: str) -> None:
    script = "id -u; id -g; for c in gcc cc c++ make; do command -v $c || true; done"
    done = podman(
        "run", "--rm", "--network=none", *LIMITS, "--entrypoint", "/bin/sh", tag, "-c", script
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[:2] == ["10001", "10001"], lines
    assert lines[2:] == [], f"compilers in the image: {lines[2:]}"


def check_config(tag: str) -> None:
    done = podman("image", "inspect", tag)
    assert done.returncode == 0, done.stderr
    (image,) = json.loads(done.stdout)
    config = image["Config"]
    assert config["User"] == "10001:10001", config
    assert config["Entrypoint"] == ["/opt/telemax/bin/python", "-m", "consumer"], config
    assert config["Cmd"] == ["run"], config
    # podman reports a Docker-format HEALTHCHECK beside the OCI config, not inside it.
    health = image.get("Healthcheck") or config.get("Healthcheck") or {}
    assert health.get("Test", [""])[0] == "CMD", sorted(image)
    assert "/healthz" in " ".join(health["Test"]), health
    assert "9108/tcp" in config["ExposedPorts"], config
    print(f"image size: {image['Size'] / 1e6:.0f} MB", flush=True)


def check_worker(tag: str, tmp: Path) -> None:
    with (tmp / "moto.log").open("wb") as log, moto_process(log) as endpoint:
        suffix = uuid.uuid4().hex[:8]
        env = {
            **aws_env(endpoint),
            "TELEMAX_STREAM": f"stream-{suffix}",
            "TELEMAX_TABLE": f"TELEMAX-{suffix}",
            "TELEMAX_LEASE_TABLE": f"leases-{suffix}",
            "TELEMAX_DLQ_TABLE": f"deadletter-{suffix}",
        }
        done = sh(
            [sys.executable, "-m", "consumer", "setup"], timeout=60, env={**os.environ, **env}
        )
        assert done.returncode == 0, done.stderr
        session = botocore.session.get_session()

        def client(service: str) -> Any:
            return session.create_client(
                service,
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )

        kinesis, dynamodb = client("kinesis"), client("dynamodb")
        readings = [
            {"hardwareID": f"HW-{i % 20:03d}", "Data1": "LNK-1", "Data2": i * 0.5,
             "Timestamp": f"2026-01-01T00:00:{i // 20:02d}.{i:06d}Z", "Data3": 1.25}
            for i in range(RECORDS)
        ]  # fmt: skip
        answer = kinesis.put_records(
            StreamName=env["TELEMAX_STREAM"],
            Records=[{"Data": orjson.dumps(r), "PartitionKey": r["hardwareID"]} for r in readings],
        )
        assert answer["FailedRecordCount"] == 0

        port = free_port()
        name = f"telemax-image-test-{suffix}"
        run_env = {
            **env,
            "TELEMAX_METRICS_PORT": str(port),
            "TELEMAX_METRICS_HOST": LOCALHOST,
            "TELEMAX_SHUTDOWN_GRACE_S": str(GRACE_S),
            "TELEMAX_IDLE_POLL_S": "0.2",
        }
        args = ["run", "-d", "--name", name, "--network=host", *LIMITS]
        # As Kubernetes runs it (k8s/base/deployment.yaml): read-only root, writable /tmp only.
        args += ["--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL"]
        args += ["--security-opt", "no-new-privileges"]
        for key, value in run_env.items():
            if key not in {"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"}:
                args += ["-e", f"{key}={value}"]
        started = podman(*args, tag)
        assert started.returncode == 0, started.stderr
        try:
            wait(lambda: http_status(f"http://{LOCALHOST}:{port}/readyz") == 200, 30, "ready")
            wait(lambda: count(dynamodb, env["TELEMAX_TABLE"]) == RECORDS, 60, "records stored")
            health = podman("healthcheck", "run", name)
            assert health.returncode == 0, f"health check: {health.stdout} {health.stderr}"
            stopping = time.monotonic()
            stopped = podman("stop", "-t", str(GRACE_S + 10), name, timeout=60)
            assert stopped.returncode == 0, stopped.stderr
            took = time.monotonic() - stopping
            code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
            logs = podman("logs", name).stdout
            assert code == "0", f"exit code {code}:\n{logs[-3000:]}"
            assert took < GRACE_S, f"SIGTERM took {took:.1f} s"
            events = [
                json.loads(line)["event"] for line in logs.splitlines() if line.startswith("{")
            ]
            for event in ("worker_started", "signal_received", "lease_released", "worker_stopped"):
                assert event in events, f"no {event} in the container's log"
            print(f"stored {RECORDS} records; SIGTERM to exit 0 in {took:.1f} s", flush=True)
        finally:
            podman("rm", "-f", name)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return int(answer.status)
    except OSError:
        return 0


def count(dynamodb: Any, table: str) -> int:
    return int(dynamodb.scan(TableName=table, Select="COUNT", ConsistentRead=True)["Count"])


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.5)


def image_ids() -> set[str]:
    done = podman("images", "--all", "--quiet", "--no-trunc")
    return set(done.stdout.split())


def main() -> int:
    if os.geteuid() != 0:
        sys.exit("image-test runs podman as root (see shared/CONTAINERS.md)")
    ensure_tools()
    before = image_ids()
    made_base = ensure_base()
    base_id = podman("image", "inspect", "--format", "{{.Id}}", BASE).stdout.strip()
    tag = f"localhost/telemax:image-test-{os.getpid()}"
    checks = Checks()
    try:
        checks.run("image builds from a local Debian python3 base", lambda: build(tag))
        if checks.failed == 0:
            checks.run("--help runs without a network", lambda: check_help(tag))
            checks.run(
                "runs as 10001:10001, no compilers", lambda: check_user_and_no_compilers(tag)
            )
            checks.run(
                "image config: exec entrypoint, run, health check", lambda: check_config(tag)
            )
            with tempfile.TemporaryDirectory() as tmp:
                checks.run(
                    "worker runs read-only, stores records, drains on SIGTERM",
                    lambda: check_worker(tag, Path(tmp)),
                )
    finally:
        # Exactly the images this run made (the test image and its build stage).
        keep = before | ({base_id} if os.environ.get("KEEP_BASE") == "1" else set())
        podman("rmi", "-f", tag)
        for image in sorted(image_ids() - keep, key=lambda i: i == base_id):
            podman("rmi", "-f", image)
        if made_base and os.environ.get("KEEP_BASE") != "1":
            podman("rmi", "-f", BASE)
    print(f"{checks.passed} passed, {checks.failed} failed", flush=True)
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
