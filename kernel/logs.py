"""structlog set-up: JSON, one event per line on stdout, stable snake_case event names."""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog
from structlog.typing import FilteringBoundLogger

LOG_LEVELS = ("debug", "info", "warning", "error")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(level: str = "info", *, stream: Any = None, json: bool = True) -> None:
    """Configure structlog once per process. ``json=False`` gives aligned console lines."""
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=True,
    )


def get(**bound: Any) -> FilteringBoundLogger:
    """A logger with ``bound`` context (worker_id, shard_id, …)."""
    logger: FilteringBoundLogger = structlog.get_logger().bind(**bound)
    return logger
