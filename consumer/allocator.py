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
worker's largest batches took (its peak RSS, which a container is sized for anyway); a
``MALLOC_*`` variable set in the environment wins over this.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # (glibc's malloc.h)
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 256 << 20  # free heap memory above this goes back to the system


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Large blocks from the heap, not ``mmap``; up to KEEP_FREED_BYTES of freed heap kept.
    Whether it was done (False: not glibc, or a ``MALLOC_`` setting of the environment's)."""
    if any(name.startswith("MALLOC_") for name in environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
