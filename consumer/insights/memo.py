"""A bounded memo read a batch at a time (pure): each key's value looked up in C, the keys not
known made together, the memo cleared when they would overfill it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MEMO_SIZE = 65_536  # each memo's bound: a stream moves on through time and groups


def each_known(
    keys: Sequence[K],
    known: dict[K, V],
    make: Callable[[set[K]], dict[K, V] | None],
    limit: int | None = None,
) -> list[V] | None:
    """``known[key]`` for each key. Keys not known are made by ``make`` (given them all at
    once) and kept; when they would take the memo past ``limit`` (MEMO_SIZE) it is cleared
    first and every key of the batch made anew. None when ``make`` gives None (then none is
    kept)."""
    limit = MEMO_SIZE if limit is None else limit
    try:
        return list(map(known.__getitem__, keys))  # (most batches: every key known)
    except KeyError:
        pass
    distinct = dict.fromkeys(keys).keys()
    new = distinct - known.keys()  # (a set already)
    if len(known) + len(new) > limit:
        known.clear()
        new = set(distinct)
    made = make(new)
    if made is None:
        return None
    known.update(made)
    return list(map(known.__getitem__, keys))
