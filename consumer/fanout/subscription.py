"""One shard's enhanced fan-out subscription as a state machine (pure: no I/O, time is a
parameter; the HTTP/2 adapter does the awaiting).

What it decides, and why:

* **Where each SubscribeToShard starts.** The first one starts at the lease's checkpoint —
  *at* a sequence-number checkpoint, as polling does (a checkpoint inside an aggregated record
  leaves some of its user records to do; the convert stage skips the done ones). Every later
  one starts *after* the last ``ContinuationSequenceNumber`` (AWS: use it even when an event
  has no records), so a subscription that ended — after 5 minutes, a reset, a watchdog —
  resumes without a gap.
* **No duplicate.** A record at or before the last one delivered is dropped and counted
  (``replayed``): a start position the service does not know replays the shard on
  kinesis-local (measured), and no subscription may hand a record over twice.
* **When to subscribe again.** At once after a clean end (AWS ends every subscription after
  5 minutes); with backoff after ``ResourceInUseException`` (the lease's previous owner's
  subscription still open: AWS lets a new one take over after 5 s, kinesis-local frees it
  about a second after the close), a reset, a throttle or a service failure; never more often
  than once a second (AWS' rate per consumer and shard). A subscription silent for
  ``WATCHDOG_S`` is given up and opened again (AWS sends an event at least every few seconds;
  the KCL and others use about 35 s).
* **The shard's end**, as the KCL reads it: an event without a continuation and with child
  shards. An event with neither is invalid: the subscription is opened again.
* **What is fatal** (one clear line, no retry loop): a missing permission, a consumer that is
  not there (deregistered under the workers), a request the service refuses as invalid.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from consumer.lease.model import AT_TIMESTAMP, LATEST, TRIM_HORIZON
from consumer.shard.discovery import Shard, child_from_api
from consumer.shard.reader import iterator_request
from kernel.backoff import Backoff
from kernel.errors import IllegalTransition

WATCHDOG_S = 35.0  # no event for this long: the subscription is silent, open it again
MIN_SUBSCRIBE_INTERVAL_S = 1.0  # AWS: one SubscribeToShard a second per consumer and shard


class Phase(enum.Enum):
    IDLE = "idle"  # no subscription open: the next one is due at ``due_at``
    OPEN = "open"  # SubscribeToShard sent, events flowing (or awaited)
    ENDED = "ended"  # the shard's end was delivered: nothing more to read
    FAILED = "failed"  # a fatal answer: the caller stops with its message


class Cause(enum.Enum):
    """Why a subscription was opened again (a metric label)."""

    ENDED = "ended"  # it ended cleanly (AWS: after 5 minutes)
    IN_USE = "in_use"  # ResourceInUseException: another subscription holds the shard
    RESET = "reset"  # the connection or the stream was reset, GOAWAY, a timeout
    SILENT = "silent"  # no event for WATCHDOG_S
    THROTTLED = "throttled"  # LimitExceededException
    FAILURE = "failure"  # InternalFailure, KMS errors, an invalid event


# (base, cap) of the backoff before the next subscription, by cause; ENDED waits only for
# the rate limit
_BACKOFF: dict[Cause, tuple[float, float]] = {
    Cause.IN_USE: (1.0, 10.0),
    Cause.RESET: (0.2, 5.0),
    Cause.SILENT: (0.2, 5.0),
    Cause.THROTTLED: (1.0, 10.0),
    Cause.FAILURE: (0.5, 10.0),
}
RETRIED = frozenset(
    {
        "ResourceInUseException",
        "LimitExceededException",
        "InternalFailureException",
        "InternalServerError",
        "ServiceUnavailable",
        "KMSThrottlingException",
        "KMSInvalidStateException",
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribe:
    """Open a subscription with this ``StartingPosition``, not before ``at``."""

    starting_position: dict[str, Any]
    at: float
    cause: Cause | None  # None: the first subscription


@dataclasses.dataclass(frozen=True, slots=True)
class Deliver:
    records: list[Any]  # as the event carried them, without the ones delivered already
    millis_behind: int | None
    replayed: int  # records dropped: at or before the last one delivered


@dataclasses.dataclass(frozen=True, slots=True)
class ShardEnded:
    records: list[Any]  # the last event's records
    children: tuple[Shard, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Reopen:
    cause: Cause
    detail: str


@dataclasses.dataclass(frozen=True, slots=True)
class Fatal:
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Gone:
    """The shard is no longer there (past the stream's retention): its end, as polling."""

    detail: str


Outcome = Deliver | ShardEnded | Reopen | Fatal | Gone


def starting_position(
    checkpoint: str, at_timestamp: datetime | None, *, at: bool
) -> dict[str, Any]:
    """SubscribeToShard's ``StartingPosition`` that resumes after ``checkpoint`` (or, with
    ``at``, at it): GetShardIterator's arguments (polling's rules), under fan-out's names."""
    request = iterator_request(checkpoint, at_timestamp, at=at)
    position: dict[str, Any] = {"Type": request["ShardIteratorType"]}
    if "StartingSequenceNumber" in request:
        position["SequenceNumber"] = request["StartingSequenceNumber"]
    if "Timestamp" in request:
        position["Timestamp"] = request["Timestamp"]
    return position


class Subscription:
    """One shard's subscriptions, one after another. The adapter asks :meth:`next` what to
    open, and reports what came: :meth:`on_event`, :meth:`on_error`, :meth:`on_end`,
    :meth:`on_reset`, :meth:`on_silent` (when :meth:`silent_at` has passed)."""

    def __init__(
        self,
        shard_id: str,
        checkpoint: str,
        at_timestamp: datetime | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.shard_id = shard_id
        self.phase = Phase.IDLE
        self.due_at = 0.0  # the next subscription, not before
        self._position = checkpoint  # resume point: the last continuation
        self._at = checkpoint not in (TRIM_HORIZON, LATEST, AT_TIMESTAMP)  # until an event
        self._at_timestamp = at_timestamp
        self._delivered: int | None = None  # the last record delivered, as a number
        self._cause: Cause | None = None  # why the next subscription is opened
        self._heard_at = 0.0  # the subscription's last sign of life
        self._subscribed_at: float | None = None
        self._rng = rng
        self._backoffs: dict[Cause, Backoff] = {}

    def finished(self) -> bool:
        """Nothing more to subscribe to: the shard ended, or a fatal answer came."""
        return self.phase in (Phase.ENDED, Phase.FAILED)

    @property
    def position(self) -> str:
        """Where the next subscription starts from (a sequence number or a sentinel)."""
        return self._position

    def next(self, now: float) -> Subscribe:
        """The subscription to open now that none is (at ``at`` or later)."""
        self._expect(Phase.IDLE)
        at = max(now, self.due_at)
        request = Subscribe(
            starting_position(self._position, self._at_timestamp, at=self._at),
            at,
            self._cause,
        )
        self.phase = Phase.OPEN
        self._subscribed_at = self._heard_at = at
        return request

    def silent_at(self) -> float | None:
        """When the open subscription counts as silent (None: none is open)."""
        return self._heard_at + WATCHDOG_S if self.phase is Phase.OPEN else None

    def on_event(self, now: float, event: Mapping[str, Any]) -> Deliver | ShardEnded | Reopen:
        """A SubscribeToShardEvent (its JSON payload)."""
        self._expect(Phase.OPEN)
        self._heard_at = now
        records: list[Any] = list(event.get("Records") or ())
        continuation = event.get("ContinuationSequenceNumber")
        children = event.get("ChildShards") or ()
        if continuation is None and not children:  # invalid: its records come again
            return self._reopen(now, Cause.FAILURE, "an event without a continuation")
        replayed = 0
        if self._delivered is not None and records:
            fresh = [r for r in records if int(r["SequenceNumber"]) > self._delivered]
            replayed, records = len(records) - len(fresh), fresh
        if records:
            self._delivered = int(records[-1]["SequenceNumber"])
        if continuation is None:
            self.phase = Phase.ENDED
            return ShardEnded(records, tuple(child_from_api(c) for c in children))
        self._position, self._at = continuation, False
        for backoff in self._backoffs.values():
            backoff.reset()  # it works again: the next trouble starts from a short wait
        return Deliver(records, event.get("MillisBehindLatest"), replayed)

    def on_error(self, now: float, code: str, message: str = "") -> Reopen | Fatal | Gone:
        """An error: an exception message in the event stream, or an error answer to
        SubscribeToShard itself (its ``__type``)."""
        self._expect(Phase.OPEN)
        if code == "ResourceInUseException":
            return self._reopen(now, Cause.IN_USE, message)
        if code == "LimitExceededException":
            return self._reopen(now, Cause.THROTTLED, message)
        if code in RETRIED or code.startswith("HTTP5"):  # (a 5xx answer without a __type)
            return self._reopen(now, Cause.FAILURE, f"{code}: {message}")
        if code == "ResourceNotFoundException" and "consumer" not in message.lower():
            self.phase = Phase.ENDED
            return Gone(message)
        self.phase = Phase.FAILED
        if code == "ResourceNotFoundException":
            return Fatal(f"SubscribeToShard on {self.shard_id}: {message} (deregistered?)")
        return Fatal(f"SubscribeToShard on {self.shard_id}: {code}: {message}")

    def on_end(self, now: float) -> Reopen:
        """The subscription ended cleanly (END_STREAM after its last event)."""
        self._expect(Phase.OPEN)
        return self._reopen(now, Cause.ENDED, "the subscription ended")

    def on_reset(self, now: float, detail: str) -> Reopen:
        """The connection or the stream broke (reset, GOAWAY, a read timeout)."""
        self._expect(Phase.OPEN)
        return self._reopen(now, Cause.RESET, detail)

    def on_silent(self, now: float) -> Reopen:
        """No event since :meth:`silent_at`: the adapter has cancelled the subscription."""
        self._expect(Phase.OPEN)
        return self._reopen(now, Cause.SILENT, f"no event for {now - self._heard_at:.0f} s")

    def _reopen(self, now: float, cause: Cause, detail: str) -> Reopen:
        self.phase = Phase.IDLE
        self._cause = cause
        wait = 0.0
        if cause in _BACKOFF:
            backoff = self._backoffs.get(cause)
            if backoff is None:
                base, cap = _BACKOFF[cause]
                backoff = self._backoffs[cause] = Backoff(base, cap, self._rng)
            wait = backoff.next_delay()
        last = self._subscribed_at if self._subscribed_at is not None else now
        self.due_at = max(now + wait, last + MIN_SUBSCRIBE_INTERVAL_S)
        return Reopen(cause, detail)

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise IllegalTransition(f"{self.shard_id}: {self.phase.name}, not {phase.name}")
