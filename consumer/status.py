"""``status``: the lease table as a readable table.

"behind ms" is the shard's MillisBehindLatest when it was last checkpointed: how far the
checkpoint trailed the tip of the shard at that moment.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.lease.model import Lease

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
    body = rows(leases)
    widths = [
        max(len(c), *(len(r[i]) for r in body)) if body else len(c) for i, c in enumerate(COLUMNS)
    ]
    line = "  ".join
    out = [
        f"stream {stream}, lease table {table}: {len(leases)} leases, "
        f"{sum(1 for lease in leases if lease.owner)} owned, "
        f"{len({lease.owner for lease in leases if lease.owner})} workers"
    ]
    out.append(line(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    out.extend(line(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in body)
    return "\n".join(out)
