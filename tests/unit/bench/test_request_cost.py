"""`make bench-request`: its summary reads what TLS adds, and every kind runs over TLS."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.bench.request_cost import summary


def test_summary_gives_each_kinds_median_and_what_tls_adds_to_it() -> None:
    lines = summary(
        {
            "entries, plain": [1.5, 1.4, 1.6],
            "GetRecords, plain": [0.8, 0.7, 0.9],
            "entries, tls": [1.9, 1.8, 2.4],
            "GetRecords, tls": [1.0, 0.9, 1.1],
        }
    )
    assert [line.split(":")[0].strip() for line in lines] == [
        "entries, plain",
        "GetRecords, plain",
        "entries, tls",
        "GetRecords, tls",
    ]
    assert "1.50 µs a unit (1.40-1.60, 3 rounds)" in lines[0] and "TLS" not in lines[0]
    assert lines[2].endswith("TLS adds +0.40 (1.27x)")
    assert lines[3].endswith("TLS adds +0.20 (1.25x)")


def test_a_kind_without_its_plain_figure_says_nothing_of_tls() -> None:
    (line,) = summary({"entries, tls": [2.0]})
    assert "TLS adds" not in line


@pytest.mark.timeout(90)
def test_writes_and_reads_run_over_plain_http_and_tls() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tests.bench.request_cost"),
            *("--calls", "40", "--rounds", "1", "--reads", "200", "--tls"),
        ],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    measured = re.findall(r"^round 1, +(.+?): +([0-9.]+) µs of CPU a request", done.stdout, re.M)
    assert [label for label, _ in measured] == [
        "entries, plain",
        "item dicts, plain",
        "entries prepared, plain",
        "GetRecords, plain",
        "entries, tls",
        "item dicts, tls",
        "entries prepared, tls",
        "GetRecords, tls",
    ]
    assert all(float(cost) > 0 for _, cost in measured)
    assert "TLS adds" in done.stdout
