"""The record handler contract: ``bytes -> item``, named ``package.module:function``.

The consumer stores what a handler returns; the producer's ``tail`` validates lines with the
same handler before it sends them, so a line the consumer would refuse is refused at the source.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kernel.errors import ConfigError

# A DynamoDB item in wire format: {"name": {"S": "..."}, "n": {"N": "1.5"}, ...}
Item = dict[str, dict[str, Any]]
Handler = Callable[[bytes], Item]

# An item already written as DynamoDB's JSON, with what it is made of. A handler may offer an
# *encoder* beside itself — ``bytes -> Encoded | None`` — for the records it can write
# straight into a request: no item dicts to build, keep and encode again (in process, 10,000
# TELEMAX readings: 3.7 µs a reading converted and kept as items, 2.4 encoded). An entry is
# (key values in the table's key order, the item's JSON, its attribute values as the UTF-8
# text of each S or N attribute, ``fields``: each value's (name, type), one shared tuple an
# encoder). Its promise, held by a test for the built-in one: for a record it encodes, the
# JSON is the item ``handler(data)`` encoded, the values and fields are that item's
# attributes, and the key is its key; any other record it answers None, and the handler
# decides (and explains a refusal).
Fields = tuple[tuple[str, str], ...]
Encoded = tuple[tuple[Any, ...], bytes, tuple[bytes, ...], Fields]
Entry = Item | Encoded  # what a table's sink writes: an item, or one already encoded
Encoder = Callable[[bytes], Encoded | None]
# The encoder of a batch of records at once (its answers in order): an encoder may offer one
# that is cheaper than a call a record; its promise is the encoder's, record by record.
BatchEncoder = Callable[[Sequence[bytes]], list[Encoded | None]]
ENCODER_ATTRIBUTE = "encode"
BATCH_ENCODER_ATTRIBUTE = "encode_batch"

H = TypeVar("H", bound=Callable[[bytes], Item])


def with_encoder(encoder: Encoder, batch: BatchEncoder | None = None) -> Callable[[H], H]:
    """Decorator: ``encoder`` encodes what the handler would make, for the records it can;
    ``batch``, when given, encodes a batch as ``encoder`` encodes each of its records."""

    def declare(handler: H) -> H:
        setattr(handler, ENCODER_ATTRIBUTE, encoder)
        if batch is not None:
            setattr(handler, BATCH_ENCODER_ATTRIBUTE, batch)
        return handler

    return declare


def encoder_of(handler: object) -> Encoder | None:
    encoder: Encoder | None = getattr(handler, ENCODER_ATTRIBUTE, None)
    return encoder


def batch_encoder_of(handler: object) -> BatchEncoder | None:
    """The handler's batch encoder, or its encoder's over each record; None without one."""
    batch: BatchEncoder | None = getattr(handler, BATCH_ENCODER_ATTRIBUTE, None)
    encoder = encoder_of(handler)
    if batch is None and encoder is not None:
        one = encoder

        def batch(datas: Sequence[bytes]) -> list[Encoded | None]:
            return list(map(one, datas))

    return batch


def as_item(entry: Entry) -> Item:
    """The item an entry stands for."""
    if type(entry) is tuple:
        return {
            name: {kind: value.decode()}
            for (name, kind), value in zip(entry[3], entry[2], strict=True)
        }
    return entry  # type: ignore[return-value]


def as_items(entries: Sequence[Entry]) -> list[Item]:
    """:func:`as_item` of each."""
    if tuple not in map(type, entries):
        return list(entries)  # type: ignore[arg-type]
    return [as_item(entry) for entry in entries]


def load_handler(spec: str, source: str = "TELEMAX_HANDLER") -> Handler:
    """Import ``package.module:function``; a wrong spec is a configuration error whose line
    starts with ``source`` (the variable or flag that named it)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        handler = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{source}: cannot load record handler {spec!r}: {exc}") from None
    if not callable(handler):
        raise ConfigError(f"{source}: record handler {spec!r} is not callable")
    return handler  # type: ignore[no-any-return]
