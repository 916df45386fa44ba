"""The alert topic as a destination (:class:`~consumer.pipeline.sink.Wire`): each alert
published once, through a ledger in DynamoDB, at a bounded rate.

Exactly once, per alert identity (``feed|rule|key``):

1. **Claim**: a conditional PutItem (``attribute_not_exists``) of the alert's ledger item,
   ``state = claimed``, naming this worker. Only the claimant publishes. A claim found already
   ``sent`` means done (a replay, a fail-over, a resent record: counted as ``duplicate``); one
   ``claimed`` by another worker is waited for, and taken over (a conditional update on the
   claim seen) only once it has stood still for ``stale_after_s`` on *this* worker's monotonic
   clock, as leases expire (DESIGN §3.2): its claimant died before it could finish.
2. **Publish** (SNS ``Publish``), at most ``rate`` per second per worker; an alert that must
   wait for its turn is counted (``telemax_alerts_held_back_total``), never dropped: the shard
   waits with it, and its checkpoint too.
3. **Mark** ``state = sent`` (PutItem) right after its own publish, before the sink calls the
   alert durable.

A send stopped from outside (a lost lease, a shutdown cancels the shard's writes) lets a
Publish already under way and its mark end first, within a bounded grace (half the claim's
patience, 5 s at most; the Lambda handler's is shorter, inside its deadline reserve).

The gaps that remain, each between SNS taking a message and the mark: a claimant that dies
there (or outlives its grace) leaves a claim that is taken over and published again; and a
Publish whose answer is lost (a dropped connection, a read timeout) is sent again by the
client's retries, as SNS may have taken it or not (nothing is dropped on a doubt). A FIFO
topic (``….fifo``) closes both: every message carries the alert identity's digest as its
``MessageDeduplicationId``, and SNS drops a repeat within five minutes.

Ledger items expire through the table's TTL attribute ``expiresAt`` after ``retention_s``
(``TELEMAX_ALERT_LEDGER_RETENTION_S``): it must outlast any replay, so at least the stream's
retention (Kinesis keeps records up to a year).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from consumer.metrics import Metrics
from consumer.pipeline.alerts import Alert
from kernel.aws import unless_fenced
from kernel.logs import get as get_logger
from kernel.rate import TokenBucket
from kernel.tasks import to_the_end

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sns import SNSClient

CLAIMED, SENT = "claimed", "sent"
DEFAULT_RETENTION_S = 8 * 24 * 3600  # Kinesis' default retention is one day, SQS' at most 14
# a claim older than this share of stale_after_s (on the claimant's clock) is renewed before
# publishing: the rest is the margin for the Publish call itself
CLAIM_SAFE_SHARE = 0.5
MAX_FINISH_GRACE_S = 5.0  # a Publish under way and its mark: a cancellation waits this long
SNS_REFUSALS = frozenset({"InvalidParameter", "InvalidParameterValue", "ParameterValueInvalid"})


@dataclasses.dataclass
class _Claims:
    """What this worker knows of alerts it is sending (forgotten once marked)."""

    # ours: id -> (our claim's claimedAt, when we sent that claim, monotonic)
    mine: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    published: dict[str, str] = dataclasses.field(default_factory=dict)  # id -> message id
    # marked sent while a call of the same chunk failed: done, whatever the retry finds
    marked: set[str] = dataclasses.field(default_factory=set)
    # claims of others: id -> (their claimedAt, when we first saw that claim, monotonic)
    seen: dict[str, tuple[str, float]] = dataclasses.field(default_factory=dict)
    # claim writes of ours that failed: id -> {claimedAt: when we sent it}. A write applied
    # whose answer was lost fails its condition when the client sends it again; the ledger
    # then shows our own claim, which we know by its claimedAt
    tried: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Sending:
    """An alert this worker is sending: its lock, and how many sends hold or want it."""

    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    users: int = 0


class AlertWire:
    destination = "alerts"
    api = "Publish"
    max_chunk = 10
    refusal_codes = SNS_REFUSALS
    refusal_reason = "rejected_by_sns"

    def __init__(
        self,
        sns: SNSClient,
        dynamodb: DynamoDBClient,
        *,
        topic_arn: str,
        ledger_table: str,
        owner: str,
        metrics: Metrics,
        rate: float,
        stale_after_s: float,
        retention_s: float = DEFAULT_RETENTION_S,
        finish_grace_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sns = sns
        self._db = dynamodb
        self.topic_arn = topic_arn
        self.ledger_table = ledger_table
        self._owner = owner
        self._fifo = topic_arn.endswith(".fifo")
        burst = max(1.0, rate)  # a rate under one a second still lets one alert through
        self._bucket = TokenBucket(rate, burst=burst, initial=burst, clock=clock)
        self._stale_after_s = stale_after_s
        # Within this share a claim checked just before the publish is safe from take-over
        # (see _still_mine): finishing later would race a peer anyway. Capped: a shutdown's
        # SIGKILL comes 10 s after its own drain budget (k8s/, deploy/).
        self._finish_grace_s = (
            min(stale_after_s * CLAIM_SAFE_SHARE, MAX_FINISH_GRACE_S)
            if finish_grace_s is None
            else finish_grace_s
        )
        self._retention_s = retention_s
        self._clock = clock
        self._wall = wall_clock
        self._claims = _Claims()
        self._sending: dict[str, _Sending] = {}
        self._log = get_logger()
        self._outcomes = metrics.alerts
        self._held_back = metrics.alerts_held_back

    def identity(self, entry: Alert) -> Hashable:
        return entry.id

    async def send(self, chunk: Sequence[Alert]) -> Sequence[Alert]:
        """Claim, publish, mark; answer the alerts still to do (claimed by a live peer).
        Raises the first failed call after recording what succeeded, so a retry repeats
        nothing that is done."""
        claims = self._claims
        unclaimed = [a for a in chunk if a.id not in claims.mine and a.id not in claims.marked]
        states = await asyncio.gather(*(self._claim(a) for a in unclaimed), return_exceptions=True)
        failures = [s for s in states if isinstance(s, BaseException)]
        elsewhere = {a.id for a, state in zip(unclaimed, states, strict=True) if state == SENT}
        busy = [
            a
            for a in chunk
            if a.id not in claims.mine and a.id not in claims.marked and a.id not in elsewhere
        ]
        todo = [a for a in chunk if a.id in claims.mine]
        sent = await asyncio.gather(*(self._send_one(a) for a in todo), return_exceptions=True)
        failures += [s for s in sent if isinstance(s, BaseException)]
        busy += [a for a, done in zip(todo, sent, strict=True) if done is False]  # claim lost
        if failures:
            raise failures[0]
        for alert in chunk:
            claims.marked.discard(alert.id)
        return busy

    async def _send_one(self, alert: Alert) -> bool:
        """Publish (unless done before a failure), then mark at once: the gap in which a
        crash means a second message is one DynamoDB write long. One send of an alert at a
        time in this worker: two of its batches may carry the same alert at once (a resent
        record), and the claim is the worker's, not the batch's — the later one waits, and
        finds the alert no longer its own to send once the first has marked it. False: the
        claim was taken over while this worker stood still (see :meth:`_still_mine`), so
        the alert is not published here: its new claimant sends it.

        From the Publish call on, a cancellation (a lost lease, a shutdown) waits for the
        publish and its mark to end, up to ``finish_grace_s``: cut between them, the claim
        would stand still and a peer would publish the alert a second time."""
        async with self._one_at_a_time(alert.id):
            if alert.id not in self._claims.mine:
                return True
            if alert.id not in self._claims.published and not await self._my_turn(alert):
                return False
            await to_the_end(self._publish_and_mark(alert), self._finish_grace_s)
            return True

    async def _publish_and_mark(self, alert: Alert) -> None:
        if alert.id not in self._claims.published:
            await self._publish(alert)
        await self._db.put_item(TableName=self.ledger_table, Item=self._ledger_item(alert, SENT))
        self._claims.mine.pop(alert.id, None)
        self._claims.published.pop(alert.id, None)
        self._claims.marked.add(alert.id)

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, alert_id: str) -> AsyncIterator[None]:
        held = self._sending.get(alert_id)
        if held is None:
            held = self._sending[alert_id] = _Sending()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._sending[alert_id]

    def _ledger_item(self, alert: Alert, state: str) -> dict[str, Any]:
        now = self._wall()
        item: dict[str, Any] = {
            "alertId": {"S": alert.id},
            "state": {"S": state},
            "owner": {"S": self._owner},
            "claimedAt": {"N": str(int(now * 1000))},
            "expiresAt": {"N": str(int(now + self._retention_s))},
            "feed": {"S": alert.feed},
            "rule": {"S": alert.rule},
            "key": {"S": alert.key},
        }
        message_id = self._claims.published.get(alert.id)
        if message_id:
            item["messageId"] = {"S": message_id}
        return item

    async def _claim(self, alert: Alert) -> str | None:
        """CLAIMED (ours now), SENT (someone sent it), or None (wait: claimed by a peer)."""
        if await self._write_claim(alert, "attribute_not_exists(alertId)"):
            return CLAIMED
        found = await self._db.get_item(
            TableName=self.ledger_table, Key={"alertId": {"S": alert.id}}, ConsistentRead=True
        )
        ledger = found.get("Item")
        if ledger is None:  # expired between the two calls: claim again on the next send
            return None
        tried = self._claims.tried.pop(alert.id, {})
        if ledger["state"]["S"] == SENT:
            self._claims.seen.pop(alert.id, None)  # a claim we waited for: done, forget it
            self._outcomes.labels(alert.feed, alert.rule, "duplicate").inc()
            return SENT
        claimed_at = ledger["claimedAt"]["N"]
        if ledger["owner"]["S"] == self._owner and claimed_at in tried:
            # our own write, applied though its answer was lost: ours, not a peer's to wait
            # a lease duration for (its age counted from when we sent it, as any claim's)
            self._claims.mine[alert.id] = (claimed_at, tried[claimed_at])
            self._claims.seen.pop(alert.id, None)
            return CLAIMED
        return await self._take_over_if_stale(alert, claimed_at)

    async def _take_over_if_stale(self, alert: Alert, claimed_at: str) -> str | None:
        seen = self._claims.seen.get(alert.id)
        now = self._clock()
        if seen is None or seen[0] != claimed_at:
            self._claims.seen[alert.id] = (claimed_at, now)
            return None
        if now - seen[1] < self._stale_after_s:
            return None
        taken = await self._write_claim(
            alert,
            "#s = :claimed AND claimedAt = :seen",
            {"#s": "state"},
            {":claimed": {"S": CLAIMED}, ":seen": {"N": claimed_at}},
        )
        del self._claims.seen[alert.id]
        if not taken:
            return None
        self._outcomes.labels(alert.feed, alert.rule, "taken_over").inc()
        return CLAIMED

    async def _still_mine(self, alert: Alert) -> bool:
        """Whether this worker may publish on its claim now. A peer takes a claim over once
        it has stood still for ``stale_after_s`` on the peer's clock, counted from after the
        claim was written; so a claim younger than ``CLAIM_SAFE_SHARE`` of that on this
        worker's clock, counted from before it was written, is safe — as a lease its owner
        renews in time (DESIGN §3.2). An older one (this worker stood still: a stalled
        loop, a throttled table, the rate limit) is renewed first by a write conditional on
        it being unchanged; if it changed, a peer took it over and sends the alert."""
        claimed_at, since = self._claims.mine[alert.id]
        if self._clock() - since < self._stale_after_s * CLAIM_SAFE_SHARE:
            return True
        renewed = await self._write_claim(
            alert,
            "#s = :claimed AND #o = :me AND claimedAt = :mine",
            {"#s": "state", "#o": "owner"},
            {":claimed": {"S": CLAIMED}, ":me": {"S": self._owner}, ":mine": {"N": claimed_at}},
        )
        if not renewed:
            self._claims.mine.pop(alert.id, None)
            self._log.warning("alert_claim_lost", alert=alert.id, held_s=self._clock() - since)
        return renewed

    async def _write_claim(
        self,
        alert: Alert,
        condition: str,
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
    ) -> bool:
        """A claim written on ``condition`` (claim, take over, renew): on success the alert
        is ours, with the claim's claimedAt and when it was sent (before the write: the
        conservative end for its age)."""
        item, sent_at = self._ledger_item(alert, CLAIMED), self._clock()
        extra: dict[str, Any] = {}
        if names:
            extra["ExpressionAttributeNames"] = names
        if values:
            extra["ExpressionAttributeValues"] = values
        claimed_at = item["claimedAt"]["N"]
        self._claims.tried.setdefault(alert.id, {})[claimed_at] = sent_at
        written = await unless_fenced(
            self._db.put_item(
                TableName=self.ledger_table, Item=item, ConditionExpression=condition, **extra
            )
        )
        if written is None:
            return False
        self._claims.tried.pop(alert.id, None)
        self._claims.mine[alert.id] = (claimed_at, sent_at)
        return True

    async def _my_turn(self, alert: Alert) -> bool:
        """Wait for the rate's turn, then answer whether the claim is still ours to publish
        on (False: lost meanwhile). Nothing is sent yet: a cancellation here costs nothing."""
        delay = self._bucket.delay_for(1)
        if delay > 0:
            self._held_back.inc()
            await asyncio.sleep(delay)
        return await self._still_mine(alert)

    async def _publish(self, alert: Alert) -> None:
        attributes = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in (("feed", alert.feed), ("rule", alert.rule), ("key", alert.key))
        }
        extra: dict[str, str] = {}
        if self._fifo:
            extra["MessageGroupId"] = alert.key[:128] or "-"
            extra["MessageDeduplicationId"] = hashlib.sha256(alert.id.encode()).hexdigest()
        answer = await self._sns.publish(
            TopicArn=self.topic_arn,
            Message=alert.body,
            Subject=alert.subject,
            MessageAttributes=attributes,  # type: ignore[arg-type]
            **extra,
        )
        self._claims.published[alert.id] = answer.get("MessageId", "")
        self._outcomes.labels(alert.feed, alert.rule, "published").inc()
