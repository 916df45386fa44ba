"""The bench waits for a quiet machine: /proc/stat read right, busy spells waited out."""

from __future__ import annotations

import time

from tests.bench.machine import busy_cores, cpu_times, wait_quiet, work_after_gap


def stat(busy: int, idle: int) -> str:
    # cpu  user nice system idle iowait irq softirq steal
    return f"cpu  {busy} 0 0 {idle} 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0\n"


def test_cpu_times_count_idle_and_iowait_as_not_busy() -> None:
    assert cpu_times("cpu  10 2 3 50 5 1 1 0\n") == (17, 72)


def test_busy_cores_scale_the_share_by_the_cores() -> None:
    assert busy_cores((0, 0), (50, 100), cores=2) == 1.0
    assert busy_cores((0, 0), (0, 0), cores=2) == 0.0


def test_waits_until_an_interval_is_quiet() -> None:
    # busy 100 % for two intervals, then 5 % of the CPUs (0.1 of two cores)
    readings = iter([stat(0, 0), stat(100, 0), stat(200, 0), stat(205, 95)])
    slept: list[float] = []
    waited = wait_quiet(lambda: next(readings), slept.append, cores=2)
    assert waited == 1.5 and len(slept) == 3


def test_gives_up_after_the_limit() -> None:
    count = iter(range(1, 1000))
    assert wait_quiet(lambda: stat(100 * next(count), 0), lambda _: None, limit_s=2.0) is None


def test_work_after_gap_times_the_work_alone_each_time() -> None:
    calls: list[float] = []

    def work() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.002)

    started = time.perf_counter()
    cost = work_after_gap(0.01, 3, work)
    assert len(calls) == 3
    assert 2_000 <= cost < 11_000  # µs: the work's 2 ms, not the 10 ms pause before it too
    assert calls[0] - started >= 0.01  # each work after its pause
