"""Enhanced fan-out: SubscribeToShard over HTTP/2 (issue 15).

Only :class:`FanOutError` lives here: the worker tells fan-out's refusals from other
configuration errors without importing the HTTP/2 modules when fan-out is off."""

from kernel.errors import ConfigError


class FanOutError(ConfigError):
    """Fan-out cannot work here (a missing permission, no consumer, no HTTP/2): one line."""
