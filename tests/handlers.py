"""Record handlers that tests load into worker processes with TELEMAX_HANDLER."""

from __future__ import annotations

from collections import Counter

import orjson

from consumer.feeds.fields import decode_object
from consumer.feeds.telemax import to_item
from kernel.handlers import Item

_attempts: Counter[str] = Counter()


def flaky(data: bytes) -> Item:
    """Like the default handler, but records whose Data1 is "transient" fail twice before
    they succeed (a dependency hiccup), and "bug" ones always raise (a bug in the handler)."""
    reading = orjson.loads(data)
    if reading.get("Data1") == "transient":
        _attempts[reading["Timestamp"]] += 1
        if _attempts[reading["Timestamp"]] <= 2:
            raise ConnectionError("the enrichment service hiccupped")
    if reading.get("Data1") == "bug":
        return {"oops": {"N": str(1 // 0)}}
    return to_item(data)


def lenient(data: bytes) -> Item:
    """A 'fixed' handler: readings without a hardwareID are filed under "unknown"."""
    reading = decode_object(data)  # bad JSON stays a clear InvalidRecord
    if not reading.get("hardwareID"):
        reading["hardwareID"] = "unknown"
        data = orjson.dumps(reading)
    return to_item(data)


def as_order(data: bytes) -> Item:
    """A handler for a table keyed by ``orderID`` alone, declaring nothing: the worker must
    take the key from the table (DescribeTable), not assume TELEMAX's."""
    reading = decode_object(data)
    return {
        "orderID": {"S": f"{reading['hardwareID']}|{reading['Timestamp']}"},
        "total": {"N": str(reading.get("Data2", 0))},
    }
