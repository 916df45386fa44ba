"""The progress bar's text."""

from __future__ import annotations

import io

from consumer.testing import FakeClock
from producer.progress import Progress
from producer.shipper import Tally


def test_bar_for_a_count() -> None:
    clock = FakeClock()
    tally = Tally(acknowledged=250, failed=1, throttled=4)
    progress = Progress(lambda: tally, io.StringIO(), total=1000, clock=clock, width=10)
    clock.advance(5)
    assert progress.line() == (
        "[##--------]  25%  250/1,000 acknowledged  50 rec/s  1 failed  4 throttled  ETA 15 s"
    )


def test_bar_for_a_duration() -> None:
    clock = FakeClock()
    tally = Tally(acknowledged=300)
    progress = Progress(lambda: tally, io.StringIO(), duration_s=10, clock=clock, width=10)
    clock.advance(3)
    assert progress.line().startswith("[###-------]  30%  300 acknowledged  100 rec/s")


def test_log_output_is_one_plain_line_per_draw() -> None:
    out = io.StringIO()
    progress = Progress(lambda: Tally(acknowledged=5), out, clock=FakeClock())
    progress.draw()
    progress.finish()
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue()
