"""The write stage, one for the worker and the Lambda handler: every destination a converted
batch produces, made durable, and where each record stands.

Destinations, all through the one sink engine (:mod:`consumer.pipeline.sink`): the records
table and the dead letters (:class:`~consumer.pipeline.store.Store`), and the alert topic
when alerts are on. Items and dead letters are written side by side; items DynamoDB refuses
become dead letters; alerts go out for items once they are stored (an order that could not
be stored raises no alert).

A record is *done* when every item it gave is durable (stored, or merged away under a later
item of its key that was stored), every dead letter it gave is stored, and every alert its
items raised is published (:meth:`Progress.undone`). A destination that fails does not stop
the others: its error is kept in :attr:`Progress.errors`. The worker raises it (its checkpoint
stays where it was); the Lambda handler stops at its deadline and reports the lowest sequence
number that is not done.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence

from structlog.typing import FilteringBoundLogger

from consumer.pipeline.alerts import Alert, Alerter
from consumer.pipeline.convert import Converted, dead_letter
from consumer.pipeline.deadletter import DeadLetter
from consumer.pipeline.sink import OnDurable, Sink, ignore
from consumer.pipeline.store import Store
from kernel.aws import describe
from kernel.errors import DeadLetterRefused

ALERT_NOT_SENT = "alert_not_sent"  # a dead letter's reason: SNS refused the alert itself


@dataclasses.dataclass
class Progress:
    """Where one batch stands in the write stage, position by position."""

    converted: Converted
    letters: list[DeadLetter]  # the batch's dead letters; those of refused items are added
    refused: list[int] = dataclasses.field(default_factory=list)  # items DynamoDB refused
    durable: list[bool] = dataclasses.field(init=False)  # per item
    stored: list[bool] = dataclasses.field(init=False)  # per dead letter
    alerts: list[tuple[int, Alert]] = dataclasses.field(default_factory=list)  # (item, alert)
    alerted: list[bool] = dataclasses.field(default_factory=list)  # per alert
    errors: list[BaseException] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.durable = [False] * len(self.converted.entries)
        self.stored = [False] * len(self.letters)

    def items_durable(self, positions: Sequence[int]) -> None:
        for position in positions:
            self.durable[position] = True

    def letters_stored(self, start: int) -> OnDurable:
        """``on_stored`` for a write of ``letters[start:]``."""

        def mark(positions: Sequence[int]) -> None:
            for position in positions:
                self.stored[start + position] = True

        return mark

    def alerts_published(self, positions: Sequence[int]) -> None:
        for position in positions:
            self.alerted[position] = True

    def add_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Add dead letters (not yet stored); answer where they start."""
        start = len(self.letters)
        self.letters.extend(letters)
        self.stored.extend(False for _ in letters)
        return start

    def stored_items(self) -> list[int]:
        refused = set(self.refused)
        return [p for p, ok in enumerate(self.durable) if ok and p not in refused]

    def every_item_stored(self) -> bool:
        """Whether :meth:`stored_items` is every item (the usual batch), without the list:
        what the archive's and the insights' entries ask of each batch first."""
        return not self.refused and all(self.durable)

    def undone(self) -> set[str]:
        """Sequence numbers of the records that are not done: an item neither durable nor
        refused (a refused item is done once its own dead letter is stored), a dead letter
        not stored, or an alert not published."""
        refused = set(self.refused)
        origins = self.converted.origins
        found = {
            letter.sequence_number
            for letter, stored in zip(self.letters, self.stored, strict=True)
            if not stored
        }
        found.update(
            record["SequenceNumber"]
            for position, ((record, _), durable) in enumerate(
                zip(origins, self.durable, strict=True)
            )
            if not durable and position not in refused
        )
        found.update(
            origins[position][0]["SequenceNumber"]
            for (position, _), alerted in zip(self.alerts, self.alerted, strict=True)
            if not alerted
        )
        return found

    def raise_if_failed(self) -> None:
        """The worker's rule: any failure stops the shard before its checkpoint."""
        if self.errors:
            raise self.errors[0]
        unstored = self.stored.count(False)
        if unstored:
            raise DeadLetterRefused(f"{unstored} dead letters are not stored")


@dataclasses.dataclass(frozen=True)
class Alerting:
    """Alerts on: which items raise them, and the topic's sink."""

    alerter: Alerter
    sink: Sink[Alert]


class WriteStage:
    def __init__(self, store: Store, alerting: Alerting | None = None) -> None:
        self.store = store
        self.alerting = alerting

    @property
    def key_names(self) -> tuple[str, ...]:
        return self.store.key_names

    async def write(
        self,
        progress: Progress,
        stream: str,
        shard_id: str,
        log: FilteringBoundLogger,
        *,
        deadline: float | None = None,
        on_written: OnDurable = ignore,
    ) -> None:
        """Write every destination of ``progress``'s batch; failures (and the deadline) are
        kept in ``progress.errors``, never raised (cancellation is)."""

        def written(positions: Sequence[int]) -> None:
            progress.items_durable(positions)
            on_written(positions)

        async def items() -> None:
            letters, progress.refused = await self.store.items(
                progress.converted, stream, shard_id, written
            )
            # Items DynamoDB will never take become dead letters, each done once stored.
            await self._letters(progress, progress.add_letters(letters), log)

        await asyncio.gather(
            self._guard(items(), progress, deadline, log, "batch_write_failed"),
            self._guard(
                self._letters(progress, 0, log), progress, deadline, log, "dead_letter_write_failed"
            ),
        )
        if self.alerting is not None:
            await self._guard(
                self._alerts(progress, stream, shard_id, self.alerting, log),
                progress,
                deadline,
                log,
                "alert_publish_failed",
            )

    async def _guard(
        self,
        work: Awaitable[None],
        progress: Progress,
        deadline: float | None,
        log: FilteringBoundLogger,
        event: str,
    ) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await work
        except Exception as exc:  # incl. the deadline: what is durable is known
            progress.errors.append(exc)
            log.error(event, error=_cause(exc))

    async def _letters(self, progress: Progress, start: int, log: FilteringBoundLogger) -> None:
        """Store ``progress.letters[start:]``."""
        letters = progress.letters[start:]
        if not letters:
            return
        refused = await self.store.letters(letters, progress.letters_stored(start))
        if refused:  # the dead-letter table refusing is a bug or misconfiguration
            detail = refused[0].detail
            log.error("dead_letter_write_refused", count=len(refused), detail=detail)
            progress.errors.append(
                DeadLetterRefused(f"dead-letter table refused {len(refused)} items: {detail}")
            )
        stored = progress.stored[start : start + len(letters)]
        done = [letter for letter, ok in zip(letters, stored, strict=True) if ok]
        if done:
            log.warning("records_dead_lettered", count=len(done), first_reason=done[0].reason)

    async def _alerts(
        self,
        progress: Progress,
        stream: str,
        shard_id: str,
        alerting: Alerting,
        log: FilteringBoundLogger,
    ) -> None:
        raised = alerting.alerter.alerts(progress.converted.items, progress.stored_items())
        if not raised:
            return
        start = len(progress.alerts)
        progress.alerts.extend(raised)
        progress.alerted.extend(False for _ in raised)

        def published(positions: Sequence[int]) -> None:
            progress.alerts_published([start + p for p in positions])

        refused = await alerting.sink.write([a for _, a in raised], published)
        if not refused:
            return
        # An alert SNS will never take: the record is stored, the alert becomes a dead
        # letter saying why, so that nothing is lost silently.
        log.error("alert_refused", count=len(refused), detail=refused[0].detail)
        origins = progress.converted.origins
        letters = []
        for refusal in refused:
            record, sub = origins[raised[refusal.position][0]]
            letters.append(
                dead_letter(stream, shard_id, record, ALERT_NOT_SENT, refusal.detail, sub)
            )
            progress.alerted[start + refusal.position] = True  # done once its letter is stored
        await self._letters(progress, progress.add_letters(letters), log)


def _cause(exc: BaseException) -> str:
    """One line for the log: the first real error inside task groups, or the deadline."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "deadline: stopped writing to answer before the function times out"
    return describe(exc)
