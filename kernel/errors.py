"""Every error of ours, grouped by what the caller does with it.

- **Operator error** -> stop start-up (or the command) with the one line, exit non-zero:
  :class:`ConfigError`.
- **Bad data** -> dead-letter the record with its ``reason``; never retry, never block the
  shard: :class:`InvalidRecord`.
- **Protocol bug** -> let it crash the task that met it, our own code broke an invariant:
  :class:`IllegalTransition`.
- **Evidence refused** -> stop the shard before its checkpoint moves, nothing may pass
  unrecorded: :class:`DeadLetterRefused`.
- **AWS outcome** -> what :func:`kernel.aws.classify` says: retry, give up or fence
  (:class:`Action`).

AWS errors stay botocore's exceptions (or the lean path's identical ones); they are never
re-wrapped, only classified, so a caller asks one question: which :class:`Action`?
"""

from __future__ import annotations

import enum


class ConfigError(Exception):
    """A configuration problem; its message is the single line shown to the operator."""


class InvalidRecord(Exception):
    """The record can never become an item. ``reason`` is a stable metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class IllegalTransition(RuntimeError):
    """A state machine was asked for a move its table does not have: a bug of ours."""


class DeadLetterRefused(RuntimeError):
    """The dead-letter table refused items: the evidence of a bad record cannot be kept, so
    the shard must stop before its checkpoint passes that record (a bug or a
    misconfiguration, such as a dead-letter table keyed otherwise than ours)."""


class Action(enum.Enum):
    """What to do about an AWS error (:func:`kernel.aws.classify`)."""

    RETRY = "retry"  # transient: back off and try again
    GIVE_UP = "give_up"  # permanent for this request: report, dead-letter or stop
    FENCE = "fence"  # we lost a conditional write: someone else owns the lease now
