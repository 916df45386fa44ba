"""The C allocator tuned for a worker that frees a batch's large buffers and makes them again a
moment later (glibc only; elsewhere nothing changes).

glibc serves a large block (a ``GetRecords`` answer, orjson's copy of it, a batch's joined
data: hundreds of KB to MBs) with a fresh ``mmap`` and gives it back at ``free``: every page is
faulted in and zeroed again for the next batch. In process (``python -m tests.bench.batch_cost``,
10,000-record batches, 2026-12-06) that was 0.24 page faults a record and the read stage 0.78
µs a record; with large blocks taken from the heap and freed heap memory kept (below),
0.06 faults and 0.55 µs. Batches of up to 8,000 records did not pay it (0.06 faults): glibc's
dynamic threshold keeps blocks of up to the largest freed one on the heap, until a larger
answer crosses it. The memory kept is what the worker's largest batches took (its peak RSS,
which is what a container is sized for anyway); a ``MALLOC_*`` variable set in the
environment wins over this.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # (glibc's malloc.h)
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 256 << 20  # free heap memory above this goes back to the system


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Large blocks from the heap, not ``mmap``; up to KEEP_FREED_BYTES of freed heap kept.
    Whether it was done (False: not glibc, or a ``MALLOC_`` setting of the environment's)."""
    environ = dict(os.environ) if environ is None else environ
    if any(name.startswith("MALLOC_") for name in environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
