"""An in-memory membership table with the conditions of ``MemberRepository`` (DESIGN §3).

Like :class:`consumer.testing.LeaseTable`: every operation first sleeps ``latency[op]`` seconds
of event-loop time and may be failed by ``fault(op, key)``; run tests under ``looptime``.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
from collections.abc import Callable

from consumer.lease.members import LEADER_KEY, Beat, Leadership, Member


class MemberTable:
    def __init__(self) -> None:
        self.items: dict[str, Member] = {}
        self.leadership: Leadership | None = None
        self.latency: dict[str, float] = {}
        self.fault: Callable[[str, str], BaseException | None] = lambda op, key: None
        self.calls: list[tuple[float, str, str]] = []  # (loop time sent, op, key)

    def __getitem__(self, worker_id: str) -> Member:
        return self.items[worker_id]

    async def _enter(self, op: str, key: str) -> None:
        loop = asyncio.get_running_loop()
        self.calls.append((loop.time(), op, key))
        await asyncio.sleep(self.latency.get(op, 0.0))
        failure = self.fault(op, key)
        if failure is not None:
            raise failure

    async def beat(self, worker_id: str, beat: Beat) -> Member:
        await self._enter("beat", worker_id)
        before = self.items.get(worker_id) or Member(worker_id, 0, beat.incarnation)
        grants, revokes = before.grants, before.revokes
        if beat.fresh:
            grants, revokes = frozenset(), frozenset()
        after = dataclasses.replace(
            before,
            beat=before.beat + 1,
            incarnation=beat.incarnation,
            grants=grants - beat.acked_grants,
            revokes=revokes - beat.acked_revokes,
            ends=beat.ends,
            leaving=beat.leaving,
            draining=beat.draining,
        )
        self.items[worker_id] = after
        return after

    async def members(self) -> builtins.list[Member]:
        await self._enter("members", "*")
        return list(self.items.values())

    async def _add(self, op: str, member: Member, keys: frozenset[str]) -> bool:
        if not keys:
            return True
        await self._enter(op, member.worker_id)
        current = self.items.get(member.worker_id)
        if current is None or current.incarnation != member.incarnation or current.leaving:
            return False
        if op == "grant":
            self.items[member.worker_id] = dataclasses.replace(
                current, grants=current.grants | keys
            )
        else:
            self.items[member.worker_id] = dataclasses.replace(
                current, revokes=current.revokes | keys
            )
        return True

    async def grant(self, member: Member, keys: frozenset[str]) -> bool:
        return await self._add("grant", member, keys)

    async def revoke(self, member: Member, keys: frozenset[str]) -> bool:
        return await self._add("revoke", member, keys)

    async def name_successor(self, worker_id: str, successor: bool) -> bool:
        await self._enter("name_successor", worker_id)
        current = self.items.get(worker_id)
        if current is None:
            return False
        self.items[worker_id] = dataclasses.replace(current, successor=successor)
        return True

    async def poke(self, worker_id: str) -> bool:
        await self._enter("poke", worker_id)
        current = self.items.get(worker_id)
        if current is None:
            return False
        self.items[worker_id] = dataclasses.replace(current, pokes=current.pokes + 1)
        return True

    async def expect(self, member: Member, seconds: float) -> bool:
        await self._enter("expect", member.worker_id)
        current = self.items.get(member.worker_id)
        if current is None or current.incarnation != member.incarnation:
            return False
        self.items[member.worker_id] = dataclasses.replace(
            current, expects=current.expects + 1, expect_s=seconds
        )
        return True

    async def forget(self, member: Member) -> bool:
        await self._enter("forget", member.worker_id)
        current = self.items.get(member.worker_id)
        if current is None or current.beat != member.beat:
            return False
        del self.items[member.worker_id]
        return True

    async def leader(self) -> Leadership | None:
        await self._enter("leader", LEADER_KEY)
        return self.leadership

    async def claim_leadership(self, me: str, seen: Leadership | None) -> Leadership | None:
        await self._enter("claim_leadership", LEADER_KEY)
        current = self.leadership
        if (seen is None) != (current is None):
            return None
        if seen is not None and current is not None and current.counter != seen.counter:
            return None
        self.leadership = Leadership(me, (current.counter if current else 0) + 1)
        return self.leadership

    async def renew_leadership(
        self, current: Leadership, successor: str | None
    ) -> Leadership | None:
        await self._enter("renew_leadership", LEADER_KEY)
        now = self.leadership
        if now is None or now.owner != current.owner or now.counter != current.counter:
            return None
        self.leadership = Leadership(current.owner, current.counter + 1, successor)
        return self.leadership

    async def release_leadership(self, current: Leadership) -> bool:
        await self._enter("release_leadership", LEADER_KEY)
        now = self.leadership
        if now is None or now.owner != current.owner or now.counter != current.counter:
            return False
        self.leadership = Leadership(None, current.counter + 1)
        return True
