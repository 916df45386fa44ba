"""Which tailed lines go to the stream, and what the reject file says about the others. Pure.

A line is shipped when it is a JSON object whose partition-key field is a usable key and the
record handler (by default the consumer's TELEMAX handler) accepts it: catching a bad line
here is cheaper than dead-lettering it downstream, and the operator sees it next to the file.
The line's bytes are shipped as they are, never re-encoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from kernel.errors import InvalidRecord
from kernel.kpl import MAX_RECORD_BYTES
from kernel.kpl.encode import Entry
from producer.tail.machine import Line

MAX_PARTITION_KEY_CHARS = 256  # Kinesis limit
Validator = Callable[[bytes], object]
JSON_ONLY = "json"  # the --handler value for: any JSON object with a partition key


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    reason: str  # stable: a metric label
    detail: str = ""


class LineChecker:
    def __init__(self, key_field: str, validate: Validator | None = None) -> None:
        self.key_field = key_field
        self._validate = validate

    def check(self, line: Line) -> Entry | Rejected:
        if line.too_long:
            return Rejected("too_long", "line longer than the limit")
        if not line.data.strip():
            return Rejected("empty_line")
        try:
            value = orjson.loads(line.data)
        except orjson.JSONDecodeError as exc:
            return Rejected("not_json", str(exc))
        if not isinstance(value, dict):
            return Rejected("not_object", f"JSON {type(value).__name__}, expected an object")
        key = _partition_key(value.get(self.key_field))
        if key is None:
            return Rejected("bad_partition_key", f"{self.key_field} missing, empty or not text")
        if len(line.data) + len(key.encode()) > MAX_RECORD_BYTES:
            return Rejected("too_large", "line and key exceed the 1 MiB Kinesis record limit")
        if self._validate is not None:
            try:
                self._validate(line.data)
            except InvalidRecord as exc:
                return Rejected(exc.reason, exc.detail)
        return Entry(line.data, key, context=line)


def _partition_key(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    key = str(value)
    return key if 0 < len(key) <= MAX_PARTITION_KEY_CHARS else None


def reject_record(line: Line, rejected: Rejected, at: datetime | None = None) -> bytes:
    """One line of the reject file (JSON): where the line was, why, and the line itself
    (invalid UTF-8 shown as backslash escapes)."""
    return (
        orjson.dumps(
            {
                "time": (at or datetime.now(UTC)).isoformat(),
                "path": line.path,
                "end_offset": line.end_offset,  # the line ends just before this byte offset
                "reason": rejected.reason,
                "detail": rejected.detail[:300],
                "line": line.data.decode("utf-8", errors="backslashreplace"),
            }
        )
        + b"\n"
    )
