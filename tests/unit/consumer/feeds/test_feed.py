"""Feeds: built-ins, feeds defined elsewhere, and what a feed must declare."""

from __future__ import annotations

import re

import pytest

from consumer.feeds import FEEDS, Feed, load_feed
from consumer.feeds import telemax as telemax_module
from consumer.pipeline.keys import declare_keys
from kernel.errors import ConfigError
from kernel.handlers import Item

CUSTOM = Feed(name="parcels", to_item=lambda data: {}, key=(("parcelID", "S"),), table="P")


def test_built_in_feeds() -> None:
    assert list(FEEDS) == ["telemax", "taxi", "orders"]
    telemax = FEEDS["telemax"]
    assert telemax.to_item is telemax_module.to_item
    assert (telemax.table, telemax.dlq_table, telemax.lease_table) == (
        "TELEMAX",
        "TELEMAX-deadletter",
        "telemax-leases",
    )
    assert telemax.key_names == telemax_module.KEY_NAMES
    assert FEEDS["taxi"].table == "taxi-trips"


def test_a_feed_defined_elsewhere_is_loaded_by_module_and_name() -> None:
    assert load_feed(f"{__name__}:CUSTOM") is CUSTOM
    assert (CUSTOM.dlq_table, CUSTOM.lease_table) == ("P-deadletter", "parcels-leases")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("parcels", "TELEMAX_FEED='parcels': unknown feed (known: telemax, taxi, orders; or"),
        ("tests.nowhere:FEED", "TELEMAX_FEED: cannot load feed 'tests.nowhere:FEED': No module"),
        (f"{__name__}:NOPE", f"TELEMAX_FEED: cannot load feed '{__name__}:NOPE': module"),
        (f"{__name__}:test_built_in_feeds", "is a function, not a consumer.feeds.Feed"),
    ],
)
def test_a_wrong_feed_is_one_configuration_line(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_feed(spec)
    assert "\n" not in str(caught.value)


@declare_keys("b")
def keyed_b(data: bytes) -> Item:
    return {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "lowercase letters"),
        ({"key": ()}, "one or two distinct attributes"),
        ({"key": (("a", "S"), ("a", "S"))}, "one or two distinct attributes"),
        ({"key": (("a", "BOOL"),)}, "key attribute 'a' of type 'BOOL'"),
        ({"to_item": keyed_b}, "to_item declares key ('b',), the feed ('a',)"),
    ],
)
def test_a_feed_must_make_sense(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "name": "f",
        "to_item": lambda data: {},
        "key": (("a", "S"),),
        "table": "T",
    }
    values.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        Feed(**values)  # type: ignore[arg-type]
