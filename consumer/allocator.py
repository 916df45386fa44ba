"""The C allocator tuned for a worker that frees a batch's large blocks and makes them again a
moment later (glibc only; elsewhere nothing changes).

orjson parses a ``GetRecords`` answer into a block about twelve times the answer's size (its
document: 38 MB for a 10,000-record answer of 3.2 MB). glibc keeps a freed block on the heap
for reuse only up to its dynamic threshold, which stops at 32 MB: above that every such block
is mapped afresh, its touched pages faulted in and zeroed, and unmapped when freed — each
full batch. In process (``python -m tests.bench.batch_cost``, 10,000-record batches,
2026-12-06) that was 0.24 page faults a record and the three stages 2.9-3.2 µs a record; with
every block from the heap and freed heap memory kept (below), 0.06 faults and 2.4-2.5 µs.
Batches of up to 8,000 records never crossed the 32 MB. The memory kept is what the
worker's largest batches took (its peak RSS, which a container is sized for anyway). An
operator's own setting of the same thresholds (``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, or their ``GLIBC_TUNABLES``) wins over this;
others (``MALLOC_ARENA_MAX``, often set in images) do not touch it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # (glibc's malloc.h)
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 256 << 20  # free heap memory above this goes back to the system
# the environment's settings of what this sets (or of the thresholds it makes moot)
OPERATORS_OWN = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)
TUNABLES_OWN = (
    "glibc.malloc.mmap_max",
    "glibc.malloc.mmap_threshold",
    "glibc.malloc.trim_threshold",
    "glibc.malloc.top_pad",
)


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Large blocks from the heap, not ``mmap``; up to KEEP_FREED_BYTES of freed heap kept.
    Whether it was done (False: not glibc, or the environment sets these thresholds itself)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in environ for name in OPERATORS_OWN) or any(
        name in tunables for name in TUNABLES_OWN
    ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
