"""A worker-wide budget of records in memory: fetched from Kinesis and not yet durable.

Each shard holds at most the batch being written and one batch being fetched, but a worker
may hold many shards: without a common bound, fifty shards with a backlog would hold a
million records. A reader asks for as many records as it would like to fetch and is granted
what is free (waiting while nothing is); the grant is handed back as the records become
durable, or straight away for the part the fetch did not use.
"""

from __future__ import annotations

import asyncio


class RecordBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._free = capacity
        self._available = asyncio.Event()
        self._available.set()

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    async def acquire(self, wanted: int) -> int:
        """Wait until some budget is free; take up to ``wanted`` of it."""
        while self._free <= 0:
            await self._available.wait()
        granted = min(wanted, self._free)
        self._free -= granted
        if self._free == 0:
            self._available.clear()
        return granted

    def release(self, count: int) -> None:
        if count <= 0:
            return
        self._free = min(self.capacity, self._free + count)
        self._available.set()
