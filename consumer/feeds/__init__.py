"""Feeds: the kinds of record telemax carries (see :mod:`consumer.feeds.feed`).

Built in: ``telemax`` (network readings, the default), ``taxi`` (trips), ``orders``
(e-commerce orders). ``TELEMAX_FEED=package.module:object`` names one defined elsewhere.
"""

from __future__ import annotations

from consumer.feeds import orders, taxi, telemax
from consumer.feeds.feed import Feed
from consumer.feeds.feed import load_feed as _load
from consumer.insights.windows import InsightSpec, field

TELEMAX = Feed(
    name="telemax",
    to_item=telemax.to_item,
    key=(("hardwareID", "S"), ("Timestamp", "S")),
    table="TELEMAX",
    description="network hardware readings for topology optimisation",
    # per five minutes and hardware: readings (the count), Data2 and Data3
    insights=InsightSpec(
        window_s=300,
        time_field="Timestamp",
        group_fields=("hardwareID",),
        measures=(field("Data2"), field("Data3")),
    ),
)
FEEDS: dict[str, Feed] = {feed.name: feed for feed in (TELEMAX, taxi.FEED, orders.FEED)}
DEFAULT_FEED = TELEMAX.name


def load_feed(spec: str, source: str = "TELEMAX_FEED") -> Feed:
    """A built-in feed by name, or ``package.module:object``; ConfigError otherwise."""
    return _load(spec, FEEDS, source)


__all__ = ["DEFAULT_FEED", "FEEDS", "Feed", "load_feed"]
