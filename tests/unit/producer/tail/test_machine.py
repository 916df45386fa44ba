"""The tail state machine, as tables of observations -> actions, plus line splitting,
start offsets and the acknowledged offsets it saves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from producer.tail.machine import (
    Close,
    Detached,
    FileId,
    Line,
    Observation,
    Open,
    Read,
    SavedFile,
    Seen,
    TailMachine,
    Truncated,
)

APP, APP1, OTHER, LINK = "/l/app.log", "/l/app.log.1", "/l/other.log", "/l/link.log"
A, B, C = FileId(1, 10), FileId(1, 11), FileId(1, 12)


def observe(
    paths: Mapping[str, tuple[FileId, int]],
    open_sizes: Mapping[FileId, int] | None = None,
    now: float = 0.0,
    probes: Mapping[FileId, bytes] | None = None,
) -> Observation:
    return Observation(
        {p: Seen(f, size) for p, (f, size) in paths.items()}, open_sizes or {}, now, probes or {}
    )


def run_opens(machine: TailMachine, actions: Sequence[object]) -> None:
    """Perform the Open actions as the runner would."""
    for action in actions:
        if isinstance(action, Open):
            machine.opened(action)


def machine_reading_app(position: int = 100, **options: object) -> TailMachine:
    """A machine with APP (file A) open and read up to ``position`` (whole lines)."""
    machine = TailMachine([], **options)  # type: ignore[arg-type]
    run_opens(machine, machine.step(observe({APP: (A, 0)})))
    if position:
        machine.data_received(A, b"x" * (position - 1) + b"\n")
    return machine


# -- one step from "APP is file A, read to offset 100" ------------------------------------

STEP_TABLE = [
    ("unchanged", {APP: (A, 100)}, {A: 100}, []),
    ("grown", {APP: (A, 150)}, {A: 150}, [Read(A, 100, 50)]),
    ("truncated", {APP: (A, 40)}, {A: 40}, [Truncated(APP, A, 0), Read(A, 0, 40)]),
    ("truncated-to-empty", {APP: (A, 0)}, {A: 0}, [Truncated(APP, A, 0)]),
    (
        "renamed-with-more-to-read",
        {APP: (B, 0)},
        {A: 120},
        [Detached(APP, A), Read(A, 100, 20)],  # the successor waits: one path, one order
    ),
    ("renamed-drained-successor-empty", {APP: (B, 0)}, {A: 100}, [Detached(APP, A)]),
    (
        "renamed-drained-successor-has-data",
        {APP: (B, 5)},
        {A: 100},
        [Detached(APP, A), Close(A, None), Open(APP, B, 0)],
    ),
    ("deleted-drained", {}, {A: 100}, [Detached(APP, A)]),
    ("renamed-into-the-glob", {APP1: (A, 100)}, {A: 100}, []),
    (
        "renamed-into-the-glob-and-replaced",
        {APP1: (A, 130), APP: (B, 7)},
        {A: 130},
        [Read(A, 100, 30), Open(APP, B, 0)],
    ),
    ("new-file-matched", {APP: (A, 100), OTHER: (C, 30)}, {A: 100}, [Open(OTHER, C, 0)]),
    ("hard-link-to-the-open-file", {APP: (A, 100), LINK: (A, 100)}, {A: 100}, []),
]


@pytest.mark.parametrize(
    ("paths", "open_sizes", "expected"),
    [pytest.param(p, o, e, id=name) for name, p, o, e in STEP_TABLE],
)
def test_step(
    paths: dict[str, tuple[FileId, int]], open_sizes: dict[FileId, int], expected: list[object]
) -> None:
    machine = machine_reading_app(100)
    assert machine.step(observe(paths, open_sizes, now=0.1)) == expected


def test_renamed_file_is_followed_under_its_new_name() -> None:
    machine = machine_reading_app(100)
    machine.step(observe({APP1: (A, 100)}, {A: 100}))
    assert [s.path for s in machine.snapshot()] == [APP1]


# -- closing a detached file ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(0.5, [], id="within-grace"),
        pytest.param(1.0, [Close(A, None), Open(APP, B, 0)], id="grace-over"),
    ],
)
def test_detached_file_with_empty_successor_closes_after_grace(
    now: float, expected: list[object]
) -> None:
    machine = machine_reading_app(100, rotation_grace_s=1.0)
    assert machine.step(observe({APP: (B, 0)}, {A: 100}, now=0.0)) == [Detached(APP, A)]
    assert machine.step(observe({APP: (B, 0)}, {A: 100}, now=now)) == expected


def test_deleted_file_closes_after_grace_and_nothing_replaces_it() -> None:
    machine = machine_reading_app(100, rotation_grace_s=1.0)
    machine.step(observe({}, {A: 100}, now=0.0))
    assert machine.step(observe({}, {A: 100}, now=2.0)) == [Close(A, None)]
    assert machine.open_files == []
    assert machine.snapshot() == []


def test_detached_file_drains_before_it_closes() -> None:
    machine = machine_reading_app(100)
    machine.step(observe({APP: (B, 9)}, {A: 130}))
    machine.data_received(A, b"late line\n" * 3)
    assert machine.step(observe({APP: (B, 9)}, {A: 130})) == [Close(A, None), Open(APP, B, 0)]


def test_unterminated_last_line_is_shipped_when_a_rotated_file_closes() -> None:
    machine = machine_reading_app(100)
    machine.data_received(A, b"no newline\r")
    (detached, close, open_b) = machine.step(observe({APP: (B, 3)}, {A: 111}))
    assert isinstance(close, Close)
    assert close.last_line == Line(A, APP, 0, b"no newline", 111)
    assert (detached, open_b) == (Detached(APP, A), Open(APP, B, 0))


def test_detached_file_that_comes_back_is_not_detached_any_more() -> None:
    machine = machine_reading_app(100, rotation_grace_s=1.0)
    machine.step(observe({}, {A: 100}, now=0.0))
    assert machine.step(observe({APP1: (A, 100)}, {A: 100}, now=5.0)) == []
    assert machine.open_files == [A]


# -- where a file starts ---------------------------------------------------------------------

START_TABLE = [
    # (name, saved state, start_at_end, first observation, expected opens)
    ("fresh-start", [], False, {APP: (A, 500)}, [Open(APP, A, 0)]),
    ("fresh-start-at-end", [], True, {APP: (A, 500)}, [Open(APP, A, 500)]),
    ("resume", [SavedFile(APP, A, 120)], False, {APP: (A, 500)}, [Open(APP, A, 120)]),
    ("resume-ignores-at-end", [SavedFile(APP, A, 120)], True, {APP: (A, 500)}, [Open(APP, A, 120)]),
    (
        "truncated-while-stopped",
        [SavedFile(APP, A, 900)],
        False,
        {APP: (A, 500)},
        [Open(APP, A, 0)],
    ),
    ("rotated-while-stopped", [SavedFile(APP, A, 120)], False, {APP: (B, 40)}, [Open(APP, B, 0)]),
    (
        "rotated-into-the-glob-while-stopped",
        [SavedFile(APP, A, 120)],
        False,
        {APP1: (A, 300), APP: (B, 40)},
        [Open(APP, B, 0), Open(APP1, A, 120)],
    ),
]


@pytest.mark.parametrize(
    ("saved", "at_end", "paths", "expected"),
    [pytest.param(s, e, p, x, id=name) for name, s, e, p, x in START_TABLE],
)
def test_start_offsets(
    saved: list[SavedFile], at_end: bool, paths: dict[str, tuple[FileId, int]], expected: object
) -> None:
    machine = TailMachine(saved, start_at_end=at_end)
    assert machine.step(observe(paths)) == expected


def test_files_appearing_later_start_at_zero_even_at_end() -> None:
    machine = TailMachine([], start_at_end=True)
    run_opens(machine, machine.step(observe({APP: (A, 500)})))
    assert machine.step(observe({APP: (A, 500), OTHER: (C, 70)}, {A: 500})) == [Open(OTHER, C, 0)]


def test_successor_of_a_file_started_at_end_starts_at_zero() -> None:
    machine = TailMachine([], start_at_end=True)
    run_opens(machine, machine.step(observe({APP: (A, 500)})))
    actions = machine.step(observe({APP: (B, 20)}, {A: 500}))
    assert actions[-1] == Open(APP, B, 0)


def test_saved_file_not_yet_opened_stays_in_the_snapshot() -> None:
    machine = TailMachine([SavedFile(APP, A, 120)])
    machine.step(observe({APP: (A, 500)}))  # the open failed: opened() never called
    assert machine.snapshot() == [SavedFile(APP, A, 120)]


def test_saved_file_no_path_names_is_forgotten() -> None:
    machine = TailMachine([SavedFile(APP, A, 120)])
    machine.step(observe({APP: (B, 5)}))
    assert machine.snapshot() == []


# -- lines -----------------------------------------------------------------------------------

SPLIT_TABLE = [
    ("one-line", [b"a\n"], [(b"a", 2)]),
    ("two-lines", [b"a\nbb\n"], [(b"a", 2), (b"bb", 5)]),
    ("partial-then-rest", [b"ab", b"c\nd", b"\n"], [(b"abc", 4), (b"d", 6)]),
    ("crlf", [b"a\r\n", b"b\r", b"\n"], [(b"a", 3), (b"b", 6)]),
    ("empty-lines", [b"\n\n"], [(b"", 1), (b"", 2)]),
    ("no-newline-yet", [b"abc"], []),
]


@pytest.mark.parametrize(
    ("chunks", "expected"), [pytest.param(c, e, id=name) for name, c, e in SPLIT_TABLE]
)
def test_lines_split_across_reads(chunks: list[bytes], expected: list[tuple[bytes, int]]) -> None:
    machine = machine_reading_app(0)
    lines = [line for chunk in chunks for line in machine.data_received(A, chunk)]
    assert [(line.data, line.end_offset) for line in lines] == expected
    assert all(line.path == APP and not line.too_long for line in lines)


def test_over_long_line_in_one_read_keeps_its_head() -> None:
    machine = machine_reading_app(0, max_line_bytes=10)
    lines = machine.data_received(A, b"ok\n" + b"y" * 2000 + b"\nfine\n")
    assert [(len(x.data), x.end_offset, x.too_long) for x in lines] == [
        (2, 3, False),
        (1024, 2004, True),
        (4, 2009, False),
    ]


def test_over_long_line_across_reads_is_not_buffered() -> None:
    machine = machine_reading_app(0, max_line_bytes=10)
    assert machine.data_received(A, b"z" * 50) == []
    assert machine.data_received(A, b"z" * 50) == []
    (long_line, after) = machine.data_received(A, b"zz\nnext\n")
    assert (long_line.data, long_line.end_offset, long_line.too_long) == (b"z" * 50, 103, True)
    assert (after.data, after.end_offset) == (b"next", 108)


def test_reads_continue_at_the_position() -> None:
    machine = machine_reading_app(0)
    machine.data_received(A, b"abc\nde")
    assert machine.step(observe({APP: (A, 9)}, {A: 9})) == [Read(A, 6, 3)]


# -- truncation that the size hides ----------------------------------------------------------


def test_probes_name_the_bytes_before_the_position() -> None:
    machine = machine_reading_app(0)
    assert machine.probes() == {}
    machine.data_received(A, b"x" * 100 + b"\n")
    assert machine.probes() == {A: (101 - 64, 64)}


def test_rewrite_past_the_old_size_is_caught_by_the_fingerprint() -> None:
    machine = machine_reading_app(0)
    machine.data_received(A, b"first line\n")
    unchanged = observe({APP: (A, 11)}, {A: 11}, probes={A: b"first line\n"})
    assert machine.step(unchanged) == []
    rewritten = observe({APP: (A, 14)}, {A: 14}, probes={A: b"other line\n"})
    assert machine.step(rewritten) == [Truncated(APP, A, 0), Read(A, 0, 14)]


def test_truncation_drops_the_partial_line_and_starts_a_new_epoch() -> None:
    machine = machine_reading_app(0)
    (old,) = machine.data_received(A, b"old line\nunfinished")
    assert machine.step(observe({APP: (A, 3)}, {A: 3})) == [
        Truncated(APP, A, len(b"unfinished")),
        Read(A, 0, 3),
    ]
    (new,) = machine.data_received(A, b"ab\n")
    assert (new.epoch, new.end_offset) == (1, 3)
    machine.done(old)  # acknowledged late: belongs to content that is gone
    assert machine.snapshot() == [SavedFile(APP, A, 0)]
    machine.done(new)
    assert machine.snapshot() == [SavedFile(APP, A, 3)]


# -- acknowledged offsets --------------------------------------------------------------------


def test_snapshot_moves_only_over_an_unbroken_run_of_done_lines() -> None:
    machine = TailMachine([SavedFile(APP, A, 10)])
    run_opens(machine, machine.step(observe({APP: (A, 40)})))
    first, second, third = machine.data_received(A, b"aaaaaaaaa\nbbbbbbbbb\nccccccccc\n")
    assert machine.snapshot() == [SavedFile(APP, A, 10)]
    machine.done(third)
    machine.done(second)
    assert machine.snapshot() == [SavedFile(APP, A, 10)], "the first line is still in flight"
    machine.done(first)
    assert machine.snapshot() == [SavedFile(APP, A, 40)]


def test_lag_counts_bytes_after_the_acknowledged_offset() -> None:
    machine = machine_reading_app(0)
    (line,) = machine.data_received(A, b"abc\n")
    assert machine.lag_bytes({A: 10}) == 10
    machine.done(line)
    assert machine.lag_bytes({A: 10}) == 6


# -- saved files that moved while the tail was stopped ---------------------------------------


def test_missing_lists_the_saved_files_not_open() -> None:
    machine = TailMachine([SavedFile(APP, A, 120), SavedFile(OTHER, C, 5)])
    assert machine.missing() == {A: APP, C: OTHER}
    run_opens(machine, machine.step(observe({OTHER: (C, 5)})))
    assert machine.missing() == {}, "A was neither matched nor found: forgotten"


def test_saved_file_renamed_while_stopped_is_drained_before_its_successor() -> None:
    machine = TailMachine([SavedFile(APP, A, 120)])
    first = observe({APP: (B, 40)})
    first = Observation(first.paths, {}, 0.0, {}, moved={A: (APP1, 300)})
    actions = machine.step(first)
    assert actions == [Open(APP1, A, 120, drains=APP)], "B waits for A"
    run_opens(machine, actions)
    assert machine.step(observe({APP: (B, 40)}, {A: 300}, now=0.1)) == [Read(A, 120, 180)]
    machine.data_received(A, b"y" * 179 + b"\n")
    assert machine.step(observe({APP: (B, 40)}, {A: 300}, now=0.2)) == [
        Close(A, None),
        Open(APP, B, 0),
    ]


def test_moved_file_shorter_than_its_offset_starts_at_zero() -> None:
    machine = TailMachine([SavedFile(APP, A, 900)])
    seen = Observation({}, {}, 0.0, {}, moved={A: (APP1, 300)})
    assert machine.step(seen) == [Open(APP1, A, 0, drains=APP)]


def test_moved_report_of_a_matched_file_is_ignored() -> None:
    machine = TailMachine([SavedFile(APP, A, 10)])
    seen = Observation({APP: Seen(A, 50)}, {}, 0.0, {}, moved={A: (APP1, 50)})
    assert machine.step(seen) == [Open(APP, A, 10)]


def test_a_successor_waiting_for_a_drain_is_saved_after_the_draining_file() -> None:
    machine = machine_reading_app(100)
    machine.step(observe({APP: (B, 0)}, {A: 120}))  # A renamed, B waits
    assert machine.snapshot() == [SavedFile(APP, A, 0), SavedFile(APP, B, 0)]


def test_restart_drains_two_renamed_files_in_order_before_the_current_one() -> None:
    machine = TailMachine([SavedFile(APP, A, 50), SavedFile(APP, B, 0)])
    moved = {A: (APP1, 100), B: (APP + ".2", 30)}

    def step(open_sizes: dict[FileId, int], now: float) -> list[object]:
        base = observe({APP: (C, 10)}, open_sizes, now)
        found = {k: v for k, v in moved.items() if k not in open_sizes}
        actions = machine.step(Observation(base.paths, open_sizes, now, {}, found))
        run_opens(machine, actions)
        return list(actions)

    assert step({}, 0.0) == [Open(APP1, A, 50, drains=APP)]
    assert step({A: 100}, 0.1) == [Read(A, 50, 50)]
    machine.data_received(A, b"a" * 49 + b"\n")
    assert step({A: 100}, 0.2) == [Close(A, None), Open(APP + ".2", B, 0, drains=APP)]
    assert step({B: 30}, 0.3) == [Read(B, 0, 30)]
    machine.data_received(B, b"b" * 29 + b"\n")
    assert step({B: 30}, 0.4) == [Close(B, None), Open(APP, C, 0)]
