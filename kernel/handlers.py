"""The record handler contract: ``bytes -> item``, named ``package.module:function``.

The consumer stores what a handler returns; the producer's ``tail`` validates lines with the
same handler before it sends them, so a line the consumer would refuse is refused at the source.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from kernel.errors import ConfigError

# A DynamoDB item in wire format: {"name": {"S": "..."}, "n": {"N": "1.5"}, ...}
Item = dict[str, dict[str, Any]]
Handler = Callable[[bytes], Item]


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
