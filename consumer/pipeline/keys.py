"""Which attributes key the table a record handler writes to, checked once at start-up.

The table says (``DescribeTable`` → ``KeySchema``, HASH then RANGE); a handler may also say
which key its items carry, with :func:`declare_keys` or a ``key_names`` attribute
(:class:`KeyedHandler`). When both speak they must agree: otherwise start-up stops with one
:class:`~consumer.config.ConfigError` line naming the handler, the table and both keys::

    TELEMAX_HANDLER consumer.x:f declares key (orderID) but table 'TELEMAX' is keyed by
    (hardwareID, Timestamp)

    @declare_keys("orderID")
    def to_order(data: bytes) -> Item: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from kernel.errors import ConfigError
from kernel.handlers import Item

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

KEY_NAMES_ATTRIBUTE = "key_names"
KEY_TYPES = ("HASH", "RANGE")  # the order of a key: partition key, then sort key

H = TypeVar("H", bound=Callable[[bytes], Item])


class KeyedHandler(Protocol):
    """A record handler that says which key attributes its items carry (HASH, then RANGE);
    a class attribute ``key_names = ("orderID",)`` satisfies it."""

    @property
    def key_names(self) -> tuple[str, ...]: ...

    def __call__(self, data: bytes, /) -> Item: ...


def _valid(names: object) -> tuple[str, ...]:
    """``names`` as a key: one or two distinct non-empty strings, or ValueError."""
    if (
        not isinstance(names, tuple | list)
        or not 1 <= len(names) <= 2
        or not all(isinstance(name, str) and name for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"a key is one or two distinct attribute names (HASH, then RANGE), not {names!r}"
        )
    return tuple(names)


def declare_keys(*names: str) -> Callable[[H], H]:
    """Decorator: the handler's items are keyed by ``names`` (partition key, then sort key).

    The handler itself is returned, unchanged but for its ``key_names`` attribute.
    """
    key = _valid(names)

    def declare(handler: H) -> H:
        setattr(handler, KEY_NAMES_ATTRIBUTE, key)
        return handler

    return declare


def declared_keys(handler: object) -> tuple[str, ...] | None:
    """The key ``handler`` declares, or None; ValueError for a malformed ``key_names``."""
    names = getattr(handler, KEY_NAMES_ATTRIBUTE, None)
    if names is None:
        return None
    try:
        return _valid(names)
    except ValueError as exc:
        raise ValueError(f"{KEY_NAMES_ATTRIBUTE}: {exc}") from None


def spec_of(handler: object) -> str:
    """``module:name`` of a handler (how TELEMAX_HANDLER names it), for messages."""
    module = getattr(handler, "__module__", None) or type(handler).__module__
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    return f"{module}:{name}"


def key_names_of(description: Mapping[str, Any]) -> tuple[str, ...]:
    """A DescribeTable answer (or its ``Table`` element) -> the key: (HASH,) or (HASH, RANGE)."""
    table: Mapping[str, Any] = description.get("Table", description)
    by_type: dict[str, list[str]] = {kind: [] for kind in KEY_TYPES}
    for entry in table.get("KeySchema", ()):
        kind = entry.get("KeyType")
        if kind not in by_type:
            raise ValueError(f"unknown KeyType {kind!r} in key schema {table.get('KeySchema')}")
        by_type[kind].append(str(entry.get("AttributeName", "")))
    hashes, ranges = by_type["HASH"], by_type["RANGE"]
    if len(hashes) != 1 or len(ranges) > 1:
        raise ValueError(f"not a key schema: {table.get('KeySchema')!r}")
    return (*hashes, *ranges)


def _shown(names: tuple[str, ...]) -> str:
    return f"({', '.join(names)})"


def check(
    table: str,
    from_table: tuple[str, ...] | None,
    declared: tuple[str, ...] | None,
    handler_spec: str,
) -> tuple[str, ...]:
    """The key to write ``table`` with: the table's, which the handler's declaration (if any)
    must match; the declaration when the table's is unknown. ConfigError otherwise."""
    if from_table is not None:
        if declared is not None and tuple(declared) != tuple(from_table):
            raise ConfigError(
                f"TELEMAX_HANDLER {handler_spec} declares key {_shown(declared)} "
                f"but table {table!r} is keyed by {_shown(from_table)}"
            )
        return tuple(from_table)
    if declared is not None:
        return tuple(declared)
    raise ConfigError(
        f"cannot tell the key of table {table!r}: it has no key schema here and "
        f"TELEMAX_HANDLER {handler_spec} declares none"
    )


async def table_key_names(
    dynamodb: DynamoDBClient, table: str, handler: object, handler_spec: str
) -> tuple[str, ...]:
    """DescribeTable ``table`` and :func:`check` its key against what ``handler`` declares.

    Every failure is one ConfigError line: a malformed declaration, a table that is missing
    or not allowed (as ``config_error_from`` words it), a disagreement.
    """
    from kernel.aws import config_error_from, patiently  # botocore: not needed to declare

    try:
        declared = declared_keys(handler)
    except ValueError as exc:
        raise ConfigError(f"TELEMAX_HANDLER {handler_spec}: {exc}") from None
    what = f"DynamoDB table {table!r}"
    try:
        description = await patiently(lambda: dynamodb.describe_table(TableName=table))
    except Exception as exc:
        raise config_error_from(exc, what) or exc from None
    try:
        from_table = key_names_of(description)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    return check(table, from_table, declared, handler_spec)
