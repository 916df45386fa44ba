"""``status`` rendering of the lease table."""

from __future__ import annotations

from consumer.lease.model import Lease
from consumer.ops.status import COLUMNS, render, rows
from consumer.testing import lease

SEQ = "49590338271490256608559692538361571095921575989136588898"
LEASES = [
    lease(
        "shardId-000000000001",
        "worker-a",
        7,
        SEQ,
        sub_sequence=3,
        updated_at="2026-01-01T00:00:00.000Z",
        millis_behind=1500,
    ),
    lease("shardId-000000000000", None, 2, "SHARD_END", parents=frozenset({"p2", "p1"})),
    lease("shardId-000000000002", "worker-b", 4),
    lease("shardId-000000000003", "worker-a", 1, SEQ),
]


def test_rows_sorted_with_placeholders() -> None:
    assert rows(LEASES) == [
        ("shardId-000000000000", "-", "SHARD_END", "2", "p1,p2", "-", "-"),
        (
            "shardId-000000000001",
            "worker-a",
            SEQ + "/3",
            "7",
            "-",
            "1500",
            "2026-01-01T00:00:00.000Z",
        ),
        ("shardId-000000000002", "worker-b", "TRIM_HORIZON", "4", "-", "-", "-"),
        ("shardId-000000000003", "worker-a", SEQ, "1", "-", "-", "-"),
    ]


def test_render_summary_and_aligned_columns() -> None:
    lines = render(LEASES, "telemax-stream", "telemax-leases").splitlines()
    assert (
        lines[0]
        == "stream telemax-stream, lease table telemax-leases: 4 leases, 3 owned, 2 workers"
    )
    assert lines[1].split() == [
        "shard",
        "owner",
        "checkpoint",
        "counter",
        "parents",
        "behind",
        "ms",
        "last",
        "change",
    ]
    assert len(lines) == 2 + len(LEASES)
    starts = [lines[1].index(column) for column in COLUMNS]
    for line, row in zip(lines[2:], rows(LEASES), strict=True):
        assert [
            line.index(value, start) for value, start in zip(row, starts, strict=True)
        ] == starts
    assert lines[3] == (
        "shardId-000000000001  worker-a  "
        + SEQ
        + "/3  7        -        1500       2026-01-01T00:00:00.000Z"
    )


def test_render_empty_table() -> None:
    assert render([], "s", "t") == (
        "stream s, lease table t: 0 leases, 0 owned, 0 workers\n"
        "shard  owner  checkpoint  counter  parents  behind ms  last change"
    )


def test_no_trailing_whitespace() -> None:
    text = render(LEASES, "s", "t")
    assert all(line == line.rstrip() for line in text.splitlines())


def test_single_lease() -> None:
    only: list[Lease] = [lease("a", "w", 1)]
    text = render(only, "s", "t")
    assert text.splitlines()[2] == "a      w      TRIM_HORIZON  1        -        -          -"


def test_members_show_the_leader_and_each_members_state() -> None:
    from consumer.lease.members import Leadership, Member
    from consumer.ops.status import render_members

    members = [
        Member("w2", 7, "b2", grants=frozenset({"s1"}), draining=True),
        Member("w1", 12, "a1"),
    ]
    lines = render_members(members, Leadership("w1", 40, "w2")).splitlines()
    assert lines[0] == "leader: w1 (counter 40, successor w2); 2 members"
    assert lines[1].split() == ["worker", "beat", "incarnation", "state", "grants", "revokes"]
    assert lines[2].split() == ["w1", "12", "a1", "member", "0", "0"]
    assert lines[3].split() == ["w2", "7", "b2", "draining", "1", "0"]
    assert render_members([], None).startswith("leader: none elected; 0 members")
