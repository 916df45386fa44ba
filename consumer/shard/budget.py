"""A worker-wide budget of records in memory: fetched from Kinesis and not yet durable.

Each shard holds at most the batch being written and one batch being fetched, but a worker
may hold many shards: without a common bound, fifty shards with a backlog would hold a
million records. A reader asks for as many records as it would like to fetch and is granted
what is free, once its least grant is (``LEAST_GRANT_SHARE``: a sixteenth of the capacity, or
what it asks when that is less); the grant is handed back as the records become durable, or
straight away for the part the fetch did not use.

Readers that wait are served in the order they came, each woken only with its grant: a
release wakes as many waiters as it can serve, not all of them to find the budget spent
again (with one event for all, 64 shards waited 5,704 times on 1,692 releases in a
200,000-record run under cProfile, `tests.bench --shards 64`, 2026-12-05). A reader that comes
while others wait queues behind them, so none is passed over for ever. (CPU: 0.98x a record
in the steady window, 0.86-1.04 over 4 paired rounds on 64 shards — within this machine's
noise; the order is the point.)

Invariants: what is free plus every grant not yet released is the capacity (a grant made to
a waiter cancelled before it could take it is released at once); a reader waits only while
less than its least grant is free or others wait before it, and the first waiter's least
grant never stays free while it waits.
"""

from __future__ import annotations

import asyncio
import collections

# The least a waiting reader is granted, as a share of the capacity (or all it wants, when it
# wants less): granted whatever was free, readers behind a spent budget were woken by each
# release for the few records it freed, and fetched them in calls of their own. On 64 shards
# with a backlog, 333 of 479 GetRecords answers held 100 records or fewer (8 % of the records;
# `tests.bench --shards 64`, 2026-12-05), each a request and a batch of its own through the
# stages, and each batch written in chunks too few to keep its writers busy. A sixteenth of
# the default budget is 2,500 records: calls a quarter of GetRecords' most.
LEAST_GRANT_SHARE = 16


class RecordBudget:
    def __init__(self, capacity: int, least_grant: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        least = capacity // LEAST_GRANT_SHARE if least_grant is None else least_grant
        # never more than the capacity: the whole of it frees up once everything is stored
        self.least_grant = max(1, min(capacity, least))
        self._free = capacity
        # (wanted, the future its grant is set on), first come first
        self._waiters: collections.deque[tuple[int, asyncio.Future[int]]] = collections.deque()

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def least_for(self, wanted: int) -> int:
        """What must be free for a reader that wants ``wanted`` to be granted."""
        return min(wanted, self.least_grant)

    async def acquire(self, wanted: int) -> int:
        """Wait until at least :meth:`least_for` ``wanted`` is free and every earlier waiter
        served; take up to ``wanted`` of it."""
        if wanted <= 0:
            return 0
        if not self._waiters and self._free >= self.least_for(wanted):
            granted = min(wanted, self._free)
            self._free -= granted
            return granted
        grant: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (wanted, grant)
        self._waiters.append(entry)
        try:
            return await grant
        except asyncio.CancelledError:
            if grant.done() and not grant.cancelled():
                self.release(grant.result())  # granted as it was cancelled: handed back
            elif entry in self._waiters:  # (release may have passed over it already)
                self._waiters.remove(entry)
                self._serve()  # it may have stood before one that can be served now
            raise

    def release(self, count: int) -> None:
        if count <= 0:
            return
        self._free = min(self.capacity, self._free + count)
        self._serve()

    def _serve(self) -> None:
        """Serve the waiters in order while the first one's least grant is free (so that
        none waits while it could be served: a reader that comes finds either enough free
        budget or a queue)."""
        waiters = self._waiters
        while waiters:
            wanted, waiter = waiters[0]
            if waiter.done():  # cancelled; its task has not yet run to take itself out
                waiters.popleft()
                continue
            if self._free < self.least_for(wanted):
                return
            waiters.popleft()
            granted = min(wanted, self._free)
            self._free -= granted
            waiter.set_result(granted)
