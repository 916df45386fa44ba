"""Alert rules and the alerts they raise: pure, no I/O (the publishing is
:mod:`consumer.pipeline.publish`).

A rule is a JMESPath expression (https://jmespath.org, the language of the AWS CLI's
``--query``) over the stored record, true for a record to alert on; its result counts as
JMESPath counts truth (``false``, ``null``, ``""``, ``[]`` and ``{}`` are false), so
``total >= `1000``` and ``shipping.country == 'NG'`` both work. Rules come from the feed
(``orders``: ``large_order``, a total of 1,000 or more) or from ``TELEMAX_ALERT_RULES``, a JSON
object of rule name -> expression.

An alert's identity is ``feed|rule|key``, the key being the item's key values joined by ``|``
in key-schema order: the ledger publishes each identity once, so a record alerts once per rule
whatever is read again (replays, fail-overs, restarts) and however often a producer resends it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import jmespath
import orjson
from jmespath.exceptions import JMESPathError

from consumer.pipeline.table import item_key
from kernel.errors import ConfigError
from kernel.handlers import Item

MAX_BODY_BYTES = 250 * 1024  # SNS takes 256 KB per message, attributes included
MAX_SUBJECT = 100  # SNS: ASCII, no line breaks, at most 100 characters
_RULE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    expression: str
    compiled: Any = dataclasses.field(compare=False, repr=False)

    def matches(self, record: Mapping[str, Any]) -> bool:
        result = self.compiled.search(record)
        return result not in (None, False, "") and result != [] and result != {}


def compile_rules(rules: Mapping[str, str], source: str) -> tuple[Rule, ...]:
    """Rules by name; a bad name or expression is one ConfigError line naming ``source``."""
    compiled = []
    for name, expression in rules.items():
        if not _RULE_NAME.match(str(name)):
            raise ConfigError(f"{source}: rule name {name!r}: 1-64 of A-Z a-z 0-9 _ . -")
        if not isinstance(expression, str):
            raise ConfigError(f"{source}: rule {name!r} must be a JMESPath expression string")
        try:
            compiled.append(Rule(name, expression, jmespath.compile(expression)))
        except JMESPathError as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError(f"{source}: rule {name!r} is not JMESPath: {detail}") from None
    return tuple(compiled)


def parse_rules(raw: str) -> dict[str, str]:
    """``TELEMAX_ALERT_RULES``: a JSON object, rule name -> JMESPath (ValueError otherwise)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError('must be a JSON object of rule name -> JMESPath, e.g. {"big": "n > `9`"}')
    return value


def plain(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as plain data; numbers as exact decimals."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        return Decimal(inner)
    if kind == "M":
        return {name: plain(v) for name, v in inner.items()}
    if kind == "L":
        return [plain(v) for v in inner]
    if kind == "BOOL":
        return inner
    if kind == "NULL":
        return None
    return inner  # B, SS, NS, BS: as they are


def record_of(item: Item) -> dict[str, Any]:
    return {name: plain(value) for name, value in item.items()}


def json_number(value: object) -> object:
    """orjson's ``default`` for plain data: decimals as numbers, bytes as hex, sets sorted."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(type(value).__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One message to publish: ``id`` is the ledger's key (``feed|rule|key``)."""

    feed: str
    rule: str
    key: str
    subject: str
    body: str

    @property
    def id(self) -> str:
        return f"{self.feed}|{self.rule}|{self.key}"


def alert(feed: str, rule: str, key: str, record: Mapping[str, Any]) -> Alert:
    envelope: dict[str, Any] = {"feed": feed, "rule": rule, "key": key, "record": record}
    body = orjson.dumps(envelope, default=json_number)
    if len(body) > MAX_BODY_BYTES:  # the record is in the table; say where, not all of it
        envelope["record"] = None
        envelope["truncated"] = f"record of {len(body)} bytes: read it from the table by key"
        body = orjson.dumps(envelope, default=json_number)
    subject = _UNPRINTABLE.sub("?", f"telemax {feed}: {rule} {key}")[:MAX_SUBJECT]
    return Alert(feed, rule, key, subject, body.decode())


@dataclasses.dataclass(frozen=True)
class Alerter:
    """Which stored items raise which alerts."""

    feed: str
    rules: tuple[Rule, ...]
    key_names: tuple[str, ...]

    def key_of(self, item: Item) -> str:
        return "|".join(str(value) for value in item_key(item, self.key_names))

    def alerts(self, items: Sequence[Item], positions: Sequence[int]) -> list[tuple[int, Alert]]:
        """(position, alert) for every rule each item at ``positions`` matches."""
        raised = []
        for position in positions:
            item = items[position]
            record = record_of(item)
            for rule in self.rules:
                if rule.matches(record):
                    raised.append(
                        (position, alert(self.feed, rule.name, self.key_of(item), record))
                    )
        return raised
