"""The README's first command, smaller: `consumer demo` ends OK with every record stored."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def test_demo_stores_every_record_and_exits_zero() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TELEMAX_"))}
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "demo", "--count", "1500"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = {
        label.strip(): value.strip()
        for label, _, value in (
            line.rpartition("  ")
            for line in done.stdout.split("telemax demo summary")[1].splitlines()
        )
        if label.strip()
    }
    assert summary["produced (acknowledged by Kinesis)"] == "1,500", done.stdout
    assert summary["stored in TELEMAX"] == "1,500"
    assert summary["missing"] == "0"
    assert summary["leases still owned after shutdown"] == "none"
    assert "result: OK, every record stored" in done.stdout


def test_the_orders_demo_shows_every_destination_and_exits_zero() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TELEMAX_"))}
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "demo", "--feed", "orders", "--count", "800"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "stored in orders                      780   (valid: 780)" in out, out
    assert "alerts large_order received" in out and "each once: True" in out
    assert "each record once: True" in out
    assert "telemax/records/feed=orders/dt=" in out and "telemax/deadletters/feed=orders/" in out
    assert "insights: " in out and "780 records counted" in out
    assert "peak hours (records, busiest first)" in out
    chart = out.split("charts written to ", 1)[1].split()[0]
    assert os.path.getsize(chart) > 20_000, "the demo says where its charts are, and they are"
    assert "result: OK" in out
