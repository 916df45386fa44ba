"""A feed: what one kind of record is, and everything telemax needs to carry it.

A feed declares its validation and item mapping (``to_item``, bytes -> item, raising
:class:`~kernel.errors.InvalidRecord` with a precise reason for a record to dead-letter), its
table's key schema, its default table names, its alert rules, and its insights (event-time
windows: :class:`~consumer.insights.windows.InsightSpec`). ``TELEMAX_FEED`` names a
built-in feed (``telemax``, ``taxi``, ``orders``) or one defined elsewhere as
``package.module:object``, where the object is a :class:`Feed`::

    PARCELS = Feed(
        name="parcels",
        to_item=parcel_to_item,
        key=(("parcelID", "S"),),
        table="PARCELS",
        alerts={"lost": "status == 'lost'"},
    )

The table variables (``TELEMAX_TABLE``, ``TELEMAX_DLQ_TABLE``, ``TELEMAX_LEASE_TABLE``) still
override the names a feed gives, and ``TELEMAX_HANDLER`` its ``to_item``.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from collections.abc import Mapping

from consumer.insights.windows import InsightSpec
from consumer.pipeline.keys import declared_keys, spec_of
from kernel.errors import ConfigError
from kernel.handlers import Handler

ATTRIBUTE_TYPES = ("S", "N", "B")  # what DynamoDB allows a key attribute to be
_FEED_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclasses.dataclass(frozen=True)
class Feed:
    """``key``: (attribute, type) pairs, partition key then sort key; ``alerts``: rule name ->
    a JMESPath expression over the decoded record, true for a record to alert on."""

    name: str
    to_item: Handler
    key: tuple[tuple[str, str], ...]
    table: str
    dlq_table: str = ""  # default: the table's name + "-deadletter"
    lease_table: str = ""  # default: the feed's name + "-leases"
    alerts: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""
    insights: InsightSpec | None = None  # event-time windows (consumer.insights)

    def __post_init__(self) -> None:
        if not _FEED_NAME.match(self.name):
            raise ValueError(f"feed name {self.name!r}: lowercase letters, digits, '-' or '_'")
        if not 1 <= len(self.key) <= 2 or len({name for name, _ in self.key}) != len(self.key):
            raise ValueError(f"feed {self.name}: key must be one or two distinct attributes")
        for name, kind in self.key:
            if not name or kind not in ATTRIBUTE_TYPES:
                raise ValueError(f"feed {self.name}: key attribute {name!r} of type {kind!r}")
        declared = declared_keys(self.to_item)
        if declared is not None and declared != self.key_names:
            raise ValueError(
                f"feed {self.name}: to_item declares key {declared}, the feed {self.key_names}"
            )
        if not self.dlq_table:
            object.__setattr__(self, "dlq_table", f"{self.table}-deadletter")
        if not self.lease_table:
            object.__setattr__(self, "lease_table", f"{self.name}-leases")

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.key)

    @property
    def handler_spec(self) -> str:
        """How ``TELEMAX_HANDLER`` would name the feed's ``to_item``."""
        return spec_of(self.to_item)


def load_feed(spec: str, builtin: Mapping[str, Feed], source: str = "TELEMAX_FEED") -> Feed:
    """A built-in feed by name, or ``package.module:object``; ConfigError otherwise."""
    if spec in builtin:
        return builtin[spec]
    module_name, colon, attr = spec.partition(":")
    known = ", ".join(builtin)
    if not colon or not module_name or not attr:
        raise ConfigError(f"{source}={spec!r}: unknown feed (known: {known}; or module:object)")
    try:
        feed = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{source}: cannot load feed {spec!r}: {exc}") from None
    if not isinstance(feed, Feed):
        raise ConfigError(
            f"{source}: {spec!r} is a {type(feed).__name__}, not a consumer.feeds.Feed"
        )
    return feed
