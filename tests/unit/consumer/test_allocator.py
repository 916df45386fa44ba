"""The worker's allocator setting: a freed large block is reused, not mapped and faulted in
again; the environment's own settings of the same thresholds win, other ``MALLOC_`` ones
do not stop it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from consumer.allocator import keep_freed_memory

# orjson's parse of a 10,000-record answer takes a 36.6 MB block: above 32 MB glibc maps
# every block afresh whatever its dynamic threshold says
BLOCK = 40 << 20
BLOCKS = 10

# Each child makes and frees BLOCKS large blocks, touching every page, and prints how many
# page faults that took (a process of its own: the setting is for the whole process)
CHILD = f"""
import resource, sys
from consumer.allocator import keep_freed_memory
done = keep_freed_memory() if sys.argv[1] == "keep" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = b"x" * {BLOCK}
del block
before = faults()
for _ in range({BLOCKS}):
    block = b"x" * {BLOCK}
    del block
print(done, faults() - before)
"""

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")


def faults_of(mode: str, **settings: str) -> tuple[bool, int]:
    """The child's answer and faults, on glibc's defaults but for ``settings``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("MALLOC_") and name != "GLIBC_TUNABLES"
    }
    env.update(settings)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    ).stdout.split()
    return out[0] == "True", int(out[1])


@glibc
def test_a_freed_large_block_is_reused_without_faulting_its_pages_in_again() -> None:
    done, faults = faults_of("keep")
    assert done
    assert faults < BLOCK // 4096  # fewer than one block's pages for all of them


@glibc
def test_by_default_each_large_block_is_mapped_and_faulted_in_anew() -> None:
    done, faults = faults_of("default")  # what the setting is for: fails if glibc changes
    assert not done
    assert faults > BLOCKS * BLOCK // 4096 // 2


@glibc
def test_a_malloc_setting_of_something_else_does_not_stop_it() -> None:
    done, faults = faults_of("keep", MALLOC_ARENA_MAX="2")  # as many images set
    assert done
    assert faults < BLOCK // 4096


@pytest.mark.parametrize(
    "environ",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},
        {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_ARENA_MAX": "2"},
        {"MALLOC_TOP_PAD_": "0"},
        {"MALLOC_MMAP_MAX_": "65536"},
        {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=1048576"},
    ],
)
def test_the_operators_own_thresholds_win(environ: dict[str, str]) -> None:
    assert keep_freed_memory({"PATH": "/bin", **environ}) is False
