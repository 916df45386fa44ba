"""Acknowledged offsets: only an unbroken run of finished lines moves them."""

from __future__ import annotations

from producer.tail.watermarks import Watermarks


def test_in_order_acknowledgements_move_the_offset() -> None:
    marks = Watermarks()
    marks.start("f", 5, 0)
    for end in (10, 20, 30):
        marks.expect("f", 0, end)
    assert marks.acknowledged("f") == 5
    marks.done("f", 0, 10)
    assert marks.acknowledged("f") == 10
    marks.done("f", 0, 20)
    marks.done("f", 0, 30)
    assert (marks.acknowledged("f"), marks.in_flight("f")) == (30, 0)


def test_out_of_order_acknowledgements_wait_for_the_gap() -> None:
    marks = Watermarks()
    marks.start("f", 0, 0)
    for end in range(10, 110, 10):
        marks.expect("f", 0, end)
    for end in range(100, 10, -10):  # everything but the first, newest first
        marks.done("f", 0, end)
    assert (marks.acknowledged("f"), marks.in_flight("f")) == (0, 10)
    marks.done("f", 0, 10)
    assert (marks.acknowledged("f"), marks.in_flight("f")) == (100, 0)


def test_old_epoch_and_unknown_offsets_are_ignored() -> None:
    marks = Watermarks()
    marks.start("f", 0, 0)
    marks.expect("f", 0, 10)
    marks.start("f", 0, 1)  # truncated
    marks.done("f", 0, 10)
    marks.done("f", 1, 99)
    marks.expect("f", 0, 20)  # a late registration from the old epoch
    assert (marks.acknowledged("f"), marks.in_flight("f")) == (0, 0)


def test_files_are_independent_and_can_be_forgotten() -> None:
    marks = Watermarks()
    for name in ("a", "b"):
        marks.start(name, 0, 0)
        marks.expect(name, 0, 7)
    marks.done("a", 0, 7)
    assert (marks.acknowledged("a"), marks.acknowledged("b")) == (7, 0)
    marks.forget_except({"b"})
    assert marks.acknowledged("a") == 0
    marks.done("a", 0, 7)  # acknowledgement of a forgotten file: harmless
    assert marks.acknowledged("b") == 0
