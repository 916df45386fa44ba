"""The membership table, charged as DynamoDB would (one partition; a few KB in all).

It shares the lease table's :class:`~tests.sim.store.Usage`, under partition number
``PARTITION``, so that a scenario's figures are the two tables' sum and the busiest partition
is found over both.
"""

from __future__ import annotations

import asyncio
import math

from consumer.lease.members import Member
from consumer.testing import MemberTable, client_error
from tests.sim.store import (
    PARTITION_READS_PER_S,
    PARTITION_WRITES_PER_S,
    READ_UNIT,
    TIMESTAMP_CHARS,
    WRITE_UNIT,
    Usage,
    number_size,
)

PARTITION = 99
LEADER_ITEM_BYTES = 60
READS = {"members": 1.0, "leader": 0.5}  # consistent Scan; eventually consistent GetItem


def member_size(member: Member) -> int:
    size = len("workerId") + len(member.worker_id)
    size += len("beat") + number_size(member.beat)
    size += len("incarnation") + len(member.incarnation)
    size += len("ends") + number_size(member.ends) + len("leaving") + 1 + len("draining") + 1
    size += len("updatedAt") + TIMESTAMP_CHARS + len("successor") + 1
    if member.expects:
        size += len("expects") + number_size(member.expects) + len("expectS") + 6
    if member.grants:
        size += len("grants") + sum(len(key) for key in member.grants)
    if member.revokes:
        size += len("revokes") + sum(len(key) for key in member.revokes)
    return size


class ChargedMembers(MemberTable):
    def __init__(self, usage: Usage, *, throttle: bool = False) -> None:
        super().__init__()
        self.usage = usage
        self.throttle = throttle

    async def _enter(self, op: str, key: str) -> None:
        delay = self.latency.get(op, 0.0)
        if delay:
            await asyncio.sleep(delay)
        self._charge(op, key)
        failure = self.fault(op, key)
        if failure is not None:
            raise failure

    def _charge(self, op: str, key: str) -> None:
        second = math.floor(asyncio.get_running_loop().time())
        if op in READS:
            if op == "members":
                size = sum(map(member_size, self.items.values())) + LEADER_ITEM_BYTES
            else:
                size = LEADER_ITEM_BYTES
            units = max(1, math.ceil(size / READ_UNIT)) * READS[op]
            ledger, limit, name = self.usage.reads, PARTITION_READS_PER_S, f"members.{op}"
        else:
            item = self.items.get(key)
            size = member_size(item) if item else LEADER_ITEM_BYTES
            units = float(max(1, math.ceil(size / WRITE_UNIT)))
            ledger, limit, name = self.usage.writes, PARTITION_WRITES_PER_S, f"members.{op}"
        if self.throttle and ledger[(second, PARTITION)] + units > limit:
            self.usage.throttled[name] += 1
            raise client_error("ProvisionedThroughputExceededException", op=op)
        ledger[(second, PARTITION)] += units
        self.usage.by_operation[name] += units
        self.usage.requests[name] += 1
