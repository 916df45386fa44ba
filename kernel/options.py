"""Options: one table drives environment variables, CLI flags and ``--help``, for every command
of the consumer and the producer.

Every option has an environment variable (12-factor) and a matching flag; a flag wins over the
environment, the environment over the default. An invalid value raises :class:`ConfigError`
whose message is one line naming the variable (or flag) and the value, so start-up stops with
that line instead of a traceback. An empty variable is a value, not an absence.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from kernel.errors import ConfigError

DEFAULT_STREAM = "telemax-stream"
# The record handler both sides use by default: the consumer stores what it returns, the
# producer's tail validates lines with it. A name, imported when loaded.
DEFAULT_HANDLER = "consumer.feeds.telemax:to_item"


def positive_float(raw: str) -> float:
    value = float(raw)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError("must be a finite number > 0")
    return value


def port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0-65535")
    return value


def positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be an integer >= 1")
    return value


def choice(choices: Sequence[str], *, lower: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower() if lower else raw.upper()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def name(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def optional_name(raw: str) -> str:
    """A name, or empty for the option's derived default."""
    return raw.strip()


def timestamp(raw: str) -> datetime:
    text = raw.strip()
    if not text:
        raise ValueError("must not be empty")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an ISO-8601 timestamp, e.g. 2026-01-31T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def handler_spec(raw: str) -> str:
    value = raw.strip()
    module, _, func = value.partition(":")
    if not module or not func:
        raise ValueError("must look like package.module:function")
    return value


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its field, environment variable, flag, default, parser, and the commands
    it applies to. The flag is the variable's name without ``TELEMAX_`` unless ``flag_name``
    says otherwise."""

    field: str
    env: str
    default: str | None
    parse: Callable[[str], Any]
    help: str
    commands: frozenset[str]
    flag_name: str | None = None

    @property
    def flag(self) -> str:
        if self.flag_name:
            return self.flag_name
        return "--" + self.env.removeprefix("TELEMAX_").lower().replace("_", "-")


def add_options(parser: argparse.ArgumentParser, options: Iterable[Option], command: str) -> None:
    """Add the flags of every option that applies to ``command``; defaults come later."""
    for option in options:
        if command in option.commands:
            if option.default is None:  # derived: the help says how
                where = f"env {option.env}"
            else:
                where = f"env {option.env}, default {option.default or '(empty)'}"
            parser.add_argument(
                option.flag,
                dest=option.field,
                default=None,
                metavar="VALUE",
                help=f"{option.help} [{where}]",
            )


def values(
    options: Iterable[Option],
    command: str,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The parsed value of every option of ``command`` that has one: from its flag, else its
    environment variable, else its default (options without a default and unset are left out)."""
    env = os.environ if env is None else env
    flags = flags or {}
    found: dict[str, Any] = {}
    for option in options:
        if command not in option.commands:
            continue
        raw = flags.get(option.field)
        source = option.flag
        if raw is None:
            raw, source = env.get(option.env), option.env
        if raw is None:
            raw, source = option.default, option.env
        if raw is None:
            continue
        try:
            found[option.field] = option.parse(str(raw))
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r} is invalid: {reason(exc)}") from None
    return found


def reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith(("invalid literal", "could not convert")):
        return "not a number"
    return text
