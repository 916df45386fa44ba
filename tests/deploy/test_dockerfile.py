"""The Dockerfile: clean under hadolint, and built the way the deployments expect it (multi-stage,
base image as a build argument, non-root numeric user, exec-form entrypoint, health check on the
worker's port). Building and running it for real is `make image-test` (podman, opt-in)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from consumer.config import Settings
from tests.deploy.conftest import ROOT, run, tool

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def stages(text: str) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


@pytest.mark.timeout(30)
def test_hadolint_is_clean() -> None:
    done = run(tool("hadolint"), "--format", "json", DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == []


@pytest.mark.timeout(30)
def test_hadolint_finds_problems_in_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get install curl\nCMD python -m consumer\n")
    done = run(tool("hadolint"), "--format", "json", bad)
    assert done.returncode != 0
    codes = {finding["code"] for finding in json.loads(done.stdout)}
    assert {"DL3006", "DL3008", "DL3025"} <= codes


def test_multi_stage_build_from_a_base_image_argument() -> None:
    text = DOCKERFILE.read_text()
    first = instructions(text)[0]
    assert first[0] == "ARG" and first[1].startswith("BASE_IMAGE=")
    build, runtime = stages(text)
    assert build[0] == ("FROM", "${BASE_IMAGE} AS build")
    assert runtime[0][1].startswith("${BASE_IMAGE}")
    # Only the virtualenv crosses over: no sources, no pip cache, no build tools.
    copies = [args for word, args in runtime if word == "COPY"]
    assert copies == ["--from=build /opt/telemax /opt/telemax"]
    runs = " ".join(args for word, args in runtime if word == "RUN")
    for tool_name in ("apt-get", "apk", "gcc", "build-essential", "pip"):
        assert tool_name not in runs


def test_runtime_stage_runs_the_worker_as_non_root() -> None:
    runtime = dict(stages(DOCKERFILE.read_text())[-1])
    user, _, group = runtime["USER"].partition(":")
    assert user.isdigit() and group.isdigit() and int(user) > 0 and int(group) > 0
    entrypoint = json.loads(runtime["ENTRYPOINT"])  # exec form: a JSON array, no shell
    assert entrypoint[-2:] == ["-m", "consumer"]
    assert json.loads(runtime["CMD"]) == ["run"]
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    port = Settings().metrics_port
    assert runtime["EXPOSE"] == str(port)
    health = runtime["HEALTHCHECK"]
    assert "/healthz" in health and "CMD [" in health
    assert f"TELEMAX_METRICS_PORT', '{port}'" in health


def test_build_context_is_an_allow_list() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    # Exactly what the build stage copies.
    copied = set()
    for word, args in stages(DOCKERFILE.read_text())[0]:
        if word == "COPY":
            copied |= set(args.split()[:-1])
    assert allowed == copied
