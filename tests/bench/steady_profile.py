"""The profile of a worker's steady window: py-spy attached to the running worker when 10 % of
the records are stored, stopped at 90 % (start-up and drain left out), then summed by function.

py-spy samples from its own process (``--nonblocking``: it does not pause the worker), so the
run it watches is not one of the measured ones: the bench runs it once more, after them.
Attaching needs ptrace (root, or CAP_SYS_PTRACE in a container).
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

RATE_HZ = 250


def py_spy() -> str | None:
    """py-spy beside this interpreter (the dev extra installs it), else on PATH."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class SteadyProfile:
    """Attach at :meth:`start`, write the samples at :meth:`stop` (folded stacks, one per
    line: ``frame;frame;… count``, as flamegraph tools read them)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._proc: subprocess.Popen[bytes] | None = None
        self.started = self.stopped = False

    def start(self, pid: int) -> None:
        tool = py_spy()
        self.started = True
        if tool is None:
            print("bench: py-spy not found: no profile of the steady window", file=sys.stderr)
            return
        argv = [tool, "record", "--pid", str(pid), "--nonblocking", "--format", "raw"]
        argv += ["-r", str(RATE_HZ), "-o", str(self.out)]
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> bool:
        """Stop sampling; whether a profile was written."""
        self.stopped = True
        if self._proc is None:
            return False
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its samples, then exits
        try:
            _, err = self._proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return False
        if not self.out.exists():
            print(f"bench: py-spy wrote nothing: {err.decode(errors='replace')[-300:]}")
            return False
        return True


def top_functions(folded: Path, limit: int = 15) -> list[tuple[float, float, str]]:
    """(own %, with callees %, function) of the functions with the most samples of their own."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [_function(frame) for frame in stack.split(";")]
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
    if not total:
        return []
    return [
        (100 * n / total, 100 * inclusive[name] / total, name) for name, n in own.most_common(limit)
    ]


def _function(frame: str) -> str:
    """``name (path/to/module.py:line)`` -> ``name (module.py)``."""
    name, _, where = frame.partition(" (")
    module = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({module})" if module else name


def report(folded: Path, limit: int = 15) -> str:
    rows = top_functions(folded, limit)
    lines = [f"where the steady window's CPU goes ({folded}): own % | with callees % | function"]
    lines += [f"  {own:5.1f} | {inclusive:5.1f} | {name}" for own, inclusive, name in rows]
    return "\n".join(lines)
