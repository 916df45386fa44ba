"""What `make bench` reports: the steady window, the paired ratios, the tables."""

from __future__ import annotations

import math

import pytest

from tests.bench.results import (
    CONTENDERS,
    PAIRED_WITH_OURS,
    REVISIONS,
    Result,
    contenders_of,
    empty_results,
    paired,
    round_order,
    shard_scaling,
    steady,
    steady_cpu_us,
    table,
)


def run(contender: str, cpu_us: float, steady_us: float, drained_us: float | None) -> Result:
    """A run of 1,000,000 records costing these CPU µs a record (whole, steady, drained)."""
    return Result(
        contender,
        records=1_000_000,
        wall_s=100.0,
        steady_rps=12_000.0,
        cpu_s=cpu_us,
        first_s=0.3,
        peak_rss_mb=110.0,
        steady_cpu_us=steady_us,
        drained_cpu_s=drained_us,
        startup_cpu_s=0.15,
    )


def test_the_steady_rate_is_between_a_tenth_and_nine_tenths_of_the_records() -> None:
    samples = [(0.0, 0), (1.0, 5), (2.0, 10), (3.0, 60), (4.0, 90), (9.0, 100)]
    assert steady(samples, 100) == pytest.approx(80 / 2.0)  # 10 at 2 s, 90 at 4 s
    assert math.isnan(steady([(0.0, 0), (1.0, 50)], 100))  # never reached 90 %


def test_the_steady_cpu_is_read_between_the_first_samples_past_each_bound() -> None:
    samples = [(5, 0.10), (12, 0.20), (50, 0.50), (95, 1.03), (100, 1.5)]
    assert steady_cpu_us(samples, 100) == pytest.approx((1.03 - 0.20) / (95 - 12) * 1e6)
    assert math.isnan(steady_cpu_us([(95, 1.0)], 100))  # both bounds at one sample


def test_each_added_contender_is_paired_with_ours_round_by_round() -> None:
    results = empty_results()
    results["ours"] = [run("ours", 10, 8, 11), run("ours", 20, 16, 22), run("ours", 10, 8, 11)]
    results["insights"] = [
        run("insights", 12, 9, 14),  # 1.20x, 1.125x, 1.27x
        run("insights", 30, 20, None),  # 1.50x, 1.25x, no drain figure
        run("insights", 13, math.nan, 13),  # 1.30x, no steady figure, 1.18x
    ]
    line = paired(results)
    assert line.startswith("insights / ours, CPU µs per record, paired by round: ")
    assert "whole 1.30x (1.20-1.50)" in line  # the median of the rounds' ratios, their range
    assert "steady 1.19x (1.12-1.25)" in line  # the NaN round left out
    assert "through the drain 1.23x (1.18-1.27)" in line  # the round without one left out


def test_what_each_added_contender_costs_over_ours_is_paired_in_microseconds_too() -> None:
    """A ratio against a cheap round of ours reads high for the same added work: the rounds'
    differences say what the destination itself costs a record."""
    results = empty_results()
    results["ours"] = [run("ours", 10, 6, 11), run("ours", 20, 8, 22), run("ours", 10, 7, 11)]
    results["archive60s"] = [
        run("archive60s", 12, 8.3, 14),  # +2, +2.3, +3
        run("archive60s", 21, 8.5, None),  # +1, +0.5, no drain figure
        run("archive60s", 13, math.nan, 13),  # +3, no steady figure, +2
    ]
    lines = paired(results).splitlines()
    assert lines[0].startswith("archive60s / ours, CPU µs per record, paired by round: ")
    assert lines[1] == (
        "archive60s - ours, CPU µs per record, paired by round: whole +2.00 (+1.00 to +3.00), "
        "steady +1.40 (+0.50 to +2.30), through the drain +2.50 (+2.00 to +3.00)"
    )


def test_a_revision_before_is_read_as_ours_over_it() -> None:
    results = empty_results()
    results["ours"] = [run("ours", 9, 8, 10)]
    results["before"] = [run("before", 10, 10, 10)]
    assert "ours / before, CPU µs per record, paired by round: whole 0.90x" in paired(results)


def test_the_reference_revision_is_read_as_ours_over_it_beside_a_change_before() -> None:
    """The reference (a fixed revision: the machine's phase) and a change's before are both
    read against ours round by round, each in its own line and column."""
    results = empty_results()
    results["ours"] = [run("ours", 9, 8, 10), run("ours", 10, 9, 11), run("ours", 8, 8, 9)]
    results["before"] = [run("before", 10, 10, 10)] * 3
    results["reference"] = [
        run("reference", 20, 16, 20),  # 0.45x, 0.50x, 0.50x
        run("reference", 25, 20, 22),  # 0.40x, 0.45x, 0.50x
        run("reference", 16, 20, 30),  # 0.50x, 0.40x, 0.30x
    ]
    lines = paired(results).splitlines()
    assert lines[0].startswith("ours / before, CPU µs per record, paired by round: whole 0.90x")
    assert lines[1] == (
        "ours / reference, CPU µs per record, paired by round: whole 0.45x (0.40-0.50), "
        "steady 0.45x (0.40-0.50), through the drain 0.50x (0.30-0.50)"
    )
    assert table(results).splitlines()[0] == (
        "| | before | reference | ours | ours / before | ours / reference |"
    )
    assert round_order(["reference", "ours", "baseline"], 1) == ["ours", "reference", "baseline"]


def test_ours_is_read_over_the_worker_whose_writes_are_answered_at_once() -> None:
    results = empty_results()
    results["ours"] = [run("ours", 10, 9, 11)]
    results["busy"] = [run("busy", 8, 6, 9)]
    assert "ours / busy, CPU µs per record, paired by round: whole 1.25x" in paired(results)
    assert table(results).splitlines()[0] == "| | ours | busy | ours / busy |"


def test_the_table_shows_medians_and_each_ratio_the_way_round_it_is_read() -> None:
    results = empty_results()
    results["ours"] = [run("ours", 10, 8, 11), run("ours", 12, 9, 12), run("ours", 11, 7, 13)]
    results["archive60s"] = [run("archive60s", 13, 10, None)] * 3
    results["baseline"] = [run("baseline", 33, 30, None)] * 3
    lines = table(results).splitlines()
    assert lines[0] == "| | baseline | ours | archive60s | ours / baseline | archive60s / ours |"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines[2:]}
    assert rows["CPU µs per record"] == ["33.0", "11.0", "13.0", "0.33x", "1.18x |"]
    assert rows["CPU µs per record, steady (10-90 %)"][:2] == ["30.0", "8.0"]
    # no figure through the drain but ours': a dash, and no ratio
    assert rows["CPU µs per record, through the drain"] == ["—", "12.0", "—", "—", "— |"]
    # 12,000 records a second at 8 µs each: 9.6 % of a core
    assert rows["share of a core busy, steady"][1] == "10%"


def test_shard_scaling_compares_each_count_with_the_fewest_shards() -> None:
    few, many = empty_results(), empty_results()
    few["ours"] = [run("ours", 10, 8, None)]
    many["ours"] = [run("ours", 11, 10, None)]
    lines = shard_scaling({64: many, 4: few}, ["ours"]).splitlines()
    assert lines[0] == "| CPU µs per record | 4 shards | 64 shards |"
    assert "| ours, whole run | 10.0 | 11.0 (+10%) |" in lines
    assert "| ours, steady | 8.0 | 10.0 (+25%) |" in lines
    assert not any("through the drain" in line for line in lines)  # none measured


ALL = [
    *("ceiling", "floor", "baseline", "ours", "busy"),
    *("archive", "archive60s", "insights", "insights2s"),
]


@pytest.mark.parametrize("repeat", [1, 2, 3, 4, 5, 6, 7])
def test_a_round_runs_each_paired_contender_within_three_runs_of_ours_the_baseline_last(
    repeat: int,
) -> None:
    order = round_order(ALL, repeat)
    assert sorted(order) == sorted(ALL) and order[-1] == "baseline"
    ours = order.index("ours")
    # five contenders read against ours (busy and the four destinations): ours amid them
    distances = sorted(abs(order.index(c) - ours) for c in PAIRED_WITH_OURS if c in ALL)
    assert distances == [1, 1, 2, 2, 3]


def test_the_rounds_turn_which_contender_runs_beside_ours_and_which_runs_first() -> None:
    beside = {
        tuple(sorted(c for c in ALL if abs(o.index(c) - o.index("ours")) == 1))
        for o in (round_order(ALL, repeat) for repeat in range(1, 6))
    }
    firsts = {round_order(ALL, repeat)[0] for repeat in range(1, 3)}
    assert len(beside) == 5 and len(firsts) == 2


def test_without_ours_or_without_paired_contenders_the_order_only_turns() -> None:
    assert round_order(["ceiling", "floor", "baseline"], 2) == ["floor", "ceiling", "baseline"]
    assert round_order(["floor", "ours"], 1) == ["floor", "ours"]
    assert round_order(["ours", "archive"], 1) == ["ours", "archive"]


@pytest.mark.parametrize(
    ("only", "revisions", "chosen"),
    [
        (None, {}, [c for c in CONTENDERS if c not in REVISIONS]),
        (None, {"reference"}, [c for c in CONTENDERS if c != "before"]),
        # a revision asked for runs though --only leaves it out (it ran nothing, silently)
        (["ours", "insights"], {"reference"}, ["reference", "ours", "insights"]),
        (["insights", "ours", "before"], {"before"}, ["before", "ours", "insights"]),
    ],
)
def test_the_contenders_are_those_asked_for_with_every_revision_given(
    only: list[str] | None, revisions: set[str], chosen: list[str]
) -> None:
    assert contenders_of(only, revisions) == chosen


def test_a_revisions_contender_without_its_revision_stops_with_one_line() -> None:
    with pytest.raises(SystemExit, match="--only before needs --before REV"):
        contenders_of(["ours", "before"], set())
