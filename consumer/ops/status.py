"""``status``: the lease table and the membership table as readable tables.

"behind ms" is the shard's MillisBehindLatest when it was last checkpointed: how far the
checkpoint trailed the tip of the shard at that moment.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.lease.members import Leadership, Member
from consumer.lease.model import Lease
from consumer.ops.render import text_table

COLUMNS = ("shard", "owner", "checkpoint", "counter", "parents", "behind ms", "last change")


def rows(leases: Sequence[Lease]) -> list[tuple[str, ...]]:
    return [
        (
            lease.key,
            lease.owner or "-",
            lease.checkpoint + (f"/{lease.sub_sequence}" if lease.sub_sequence else ""),
            str(lease.counter),
            ",".join(sorted(lease.parents)) or "-",
            "-" if lease.millis_behind is None else str(lease.millis_behind),
            lease.updated_at or "-",
        )
        for lease in sorted(leases, key=lambda lease: lease.key)
    ]


def render(leases: Sequence[Lease], stream: str, table: str) -> str:
    summary = (
        f"stream {stream}, lease table {table}: {len(leases)} leases, "
        f"{sum(1 for lease in leases if lease.owner)} owned, "
        f"{len({lease.owner for lease in leases if lease.owner})} workers"
    )
    return "\n".join([summary, *text_table(COLUMNS, rows(leases))])


MEMBER_COLUMNS = ("worker", "beat", "incarnation", "state", "grants", "revokes")


def render_members(members: Sequence[Member], leadership: Leadership | None) -> str:
    """Who leads, and each member's item: a beat that does not move between two runs of
    ``status`` a lease duration apart is a worker that is gone."""
    if leadership is None or leadership.owner is None:
        leader = "leader: none elected"
    else:
        successor = f", successor {leadership.successor}" if leadership.successor else ""
        leader = f"leader: {leadership.owner} (counter {leadership.counter}{successor})"
    body = [
        (
            member.worker_id,
            str(member.beat),
            member.incarnation,
            "leaving" if member.leaving else "draining" if member.draining else "member",
            str(len(member.grants)),
            str(len(member.revokes)),
        )
        for member in sorted(members, key=lambda member: member.worker_id)
    ]
    return "\n".join([f"{leader}; {len(members)} members", *text_table(MEMBER_COLUMNS, body)])
