"""An event's time to its whole epoch second, as ``datetime.fromisoformat`` reads it (pure).

A stream's records share their seconds, so the usual form — ``YYYY-MM-DDTHH:MM:SS``, then
``Z``, ``.Z`` or ``.`` and digits and ``Z`` — is memoised by its first 19 characters (its
*head*), once its separators are checked; any other form is parsed every time. A batch's
times are read a column at a time: its texts (:func:`seconds_of`), or the UTF-8 bytes an
encoder wrote (:func:`seconds_of_bytes`, not decoded at all when every time is usual).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from consumer.insights import memo
from consumer.insights.memo import each_known

_MISSING: Any = object()
HEAD = 19  # len("YYYY-MM-DDTHH:MM:SS")
_SECONDS: dict[str, Any] = {}  # "YYYY-MM-DDTHH:MM:SS" -> its epoch second (None: not a time)
# what follows those 19 characters in a usual time: "Z", ".Z", ".123Z", … (as epoch_second says)
_USUAL_TAIL = re.compile(r"(?:\.[0-9]*)?Z\Z").match
# the same, for lines of texts joined by newlines: each line's first 19 characters
_USUAL_LINES = re.compile(r"^(.{19})(?:\.[0-9]*)?Z$", re.MULTILINE).findall


def epoch_second(text: str) -> int | None:
    """The whole epoch seconds of an ISO-8601 time as ``datetime.fromisoformat`` reads it (no
    offset: UTC). The usual form, ``YYYY-MM-DDTHH:MM:SS[.digits]Z``, is memoised by its
    second — a stream's records share their seconds — which cuts the cost per record from
    1 µs to 0.3 (measured on TELEMAX readings); any other form is parsed every time."""
    rest = text[19:]
    usual = rest == "Z" or (
        rest[:1] == "."
        and rest[-1:] == "Z"
        and (rest == ".Z" or (rest[1:-1].isascii() and rest[1:-1].isdigit()))
    )
    if not usual or text[4] != "-" or text[7] != "-" or text[13] != ":" or text[16] != ":":
        return _parse_second(text)
    head = text[:19]
    found = _SECONDS.get(head, _MISSING)
    if found is _MISSING:
        if len(_SECONDS) >= memo.MEMO_SIZE:
            _SECONDS.clear()
        found = _SECONDS[head] = _parse_second(head + "Z")
    return found  # type: ignore[no-any-return]


def seconds_of(texts: list[str | None]) -> list[int | None]:
    """:func:`epoch_second` of each text (None stays None): a usual time whose head was seen
    before is a match of its tail and a memo lookup; the rest goes through
    :func:`epoch_second`, which fills the memo. (A head is in ``_SECONDS`` only if its
    separators were checked.)"""
    known, usual = _SECONDS, _USUAL_TAIL
    heads = _usual_heads(texts)
    found: list[Any]
    if heads is not None:
        found = [known.get(head, _MISSING) for head in heads]
    else:
        found = [
            (known.get(text[:19], _MISSING) if usual(text, 19) else _MISSING)
            if text is not None
            else None
            for text in texts
        ]
    if _MISSING in found:
        for index, second in enumerate(found):
            if second is _MISSING:
                found[index] = epoch_second(texts[index])  # type: ignore[arg-type]
    return found


def _usual_heads(texts: list[str | None]) -> list[str] | None:
    """Each text's first 19 characters when every text is a usual time by its tail (as
    ``_USUAL_TAIL`` says), else None: one regex pass over the texts joined by newlines —
    none holds one, so line ``i`` is text ``i`` — instead of a match call a text (0.44 →
    0.2 µs a TELEMAX reading)."""
    if not texts or None in texts:
        return None
    joined = "\n".join(texts)  # type: ignore[arg-type]
    if joined.count("\n") != len(texts) - 1:
        return None
    heads = _USUAL_LINES(joined)
    return heads if len(heads) == len(texts) else None


def _parse_second(text: str) -> int | None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return math.floor(when.timestamp())


def seconds_of_bytes(times: Sequence[bytes]) -> list[int | None]:
    """:func:`seconds_of` of UTF-8 texts. When every time is usual and as long as the others
    (an encoder's, from one clock) its head is looked up as bytes in C, not decoded: 0.25 →
    0.1 µs a TELEMAX reading (``python -m tests.bench.insights_cost``); otherwise each is
    decoded and read by :func:`seconds_of`."""
    heads = _usual_byte_heads(times)
    if heads is None:
        return seconds_of([time.decode() for time in times])
    found = each_known(heads, _BYTE_SECONDS, _byte_head_seconds)
    return found if found is not None else seconds_of([time.decode() for time in times])


def _byte_head_seconds(heads: set[bytes]) -> dict[bytes, int | None] | None:
    """Each head's second (the second of the usual times it begins, whatever their tail);
    None when one's separators are not a time's (those times are read as texts)."""
    texts = {head: head.decode() for head in heads}
    if not all(_separated(text) for text in texts.values()):
        return None
    return {head: epoch_second(text + "Z") for head, text in texts.items()}


_BYTE_SECONDS: dict[bytes, Any] = {}  # a usual time's head as bytes -> its epoch second
_HEAD_OF = operator.itemgetter(slice(0, HEAD))


def _usual_byte_heads(times: Sequence[bytes]) -> list[bytes] | None:
    """Each time's head when every time is usual by its tail and all are as long (a few
    passes in C over the times joined: each column of characters checked at once), else
    None."""
    if not times:
        return None
    width, count = len(times[0]), len(times)
    if width <= HEAD or set(map(len, times)) != {width}:
        return None
    joined = b"".join(times)
    if not joined.isascii():  # (then a head is 19 characters, as a text's is)
        return None
    if joined[width - 1 :: width] != b"Z" * count:
        return None
    if width > HEAD + 1:  # ".Z" or ".", digits, "Z"
        if joined[HEAD::width] != b"." * count:
            return None
        if not all(joined[at::width].isdigit() for at in range(HEAD + 1, width - 1)):
            return None
    return list(map(_HEAD_OF, times))


def _separated(head: str) -> bool:
    return head[4] == "-" and head[7] == "-" and head[13] == ":" and head[16] == ":"
