"""The alert destination on moto's server (SNS, SQS, DynamoDB): each alert published once,
whoever sends it and however often, read back from an SQS queue subscribed to the topic."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from consumer.adapters.lean import environment_of, open_lean_clients
from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.pipeline.alerting import check_alerting
from consumer.pipeline.alerts import Alert, alert
from consumer.pipeline.publish import AlertWire
from consumer.pipeline.sink import Sink
from consumer.testing import FakeClock
from devkit.faultproxy import FaultProxy, Rule
from kernel.aws import Clients, open_clients
from kernel.errors import ConfigError
from tests.support import AlertTopic as Topic
from tests.support import Stack

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["lean", "aiobotocore"])
async def clients(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[Clients]:
    """SNS (and DynamoDB) on the lean clients a worker opens with its whole configuration in
    the environment (consumer.adapters.sns), or on aiobotocore's."""
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    if request.param == "aiobotocore":
        async with open_clients(services=("sns",)) as opened:
            yield opened
        return
    environment = environment_of(os.environ, Path.home())
    assert not isinstance(environment, str), environment
    lean_clients = open_lean_clients(environment, read_timeout=10, attempts=3, services=("sns",))
    async with lean_clients as lean:
        assert type(lean.sns).__name__ == "LeanSns"
        yield lean


def wire_for(
    clients: Clients,
    topic: Topic,
    owner: str,
    clock: FakeClock | None = None,
    rate: float = 100,
    finish_grace_s: float | None = None,
) -> tuple[Sink[Alert], Metrics]:
    metrics = Metrics("s")
    wire = AlertWire(
        clients.sns,
        clients.dynamodb,
        topic_arn=topic.arn,
        ledger_table=topic.ledger,
        owner=owner,
        metrics=metrics,
        rate=rate,
        stale_after_s=4.0,
        finish_grace_s=finish_grace_s,
        clock=clock or time.monotonic,
    )
    return Sink(wire, concurrency=asyncio.Semaphore(4), metrics=metrics), metrics


def alerts(count: int, rule: str = "large_order") -> list[Alert]:
    return [
        alert("orders", rule, f"ORD-{n}", {"orderID": f"ORD-{n}", "total": 1000 + n})
        for n in range(count)
    ]


def outcome(metrics: Metrics, name: str) -> float:
    labels = {"feed": "orders", "rule": "large_order", "outcome": name}
    return metrics.registry.get_sample_value("telemax_alerts_total", labels) or 0.0


async def test_each_alert_is_published_once_with_its_attributes(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    topic = Topic(stack, moto_endpoint)
    first, first_metrics = wire_for(clients, topic, "w1")
    second, second_metrics = wire_for(clients, topic, "w2")
    batch = alerts(23)
    assert await first.write(batch) == []
    # A replay by another worker, and a resent record inside one batch: nothing new goes out
    assert await second.write([*batch, batch[0]]) == []
    assert await first.write(batch[:5]) == []

    received = topic.received()
    assert sorted(m["MessageAttributes"]["key"]["Value"] for m in received) == sorted(
        a.key for a in batch
    )
    message = next(m for m in received if m["MessageAttributes"]["key"]["Value"] == "ORD-7")
    assert message["Subject"] == "telemax orders: large_order ORD-7"
    assert {k: v["Value"] for k, v in message["MessageAttributes"].items()} == {
        "feed": "orders",
        "rule": "large_order",
        "key": "ORD-7",
    }
    assert json.loads(message["Message"])["record"] == {"orderID": "ORD-7", "total": 1007}
    assert outcome(first_metrics, "published") == 23
    assert outcome(second_metrics, "duplicate") == 23
    ledger = topic.dynamodb.get_item(
        TableName=topic.ledger, Key={"alertId": {"S": "orders|large_order|ORD-7"}}
    )["Item"]
    assert ledger["state"] == {"S": "sent"} and ledger["owner"] == {"S": "w1"}
    assert int(ledger["expiresAt"]["N"]) > 0 and ledger["messageId"]["S"]


async def test_one_workers_concurrent_writes_of_an_alert_publish_it_once(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    """Two batches of one worker carry the same alert at once (a resent record, an SQS
    message delivered twice): the second finds the claim its own worker holds and must wait
    for that send, not publish beside it."""
    topic = Topic(stack, moto_endpoint)
    sink, metrics = wire_for(clients, topic, "w1")
    batch = alerts(6)
    answers = await asyncio.gather(*(sink.write(list(batch)) for _ in range(3)))
    assert answers == [[], [], []]
    keys = [m["MessageAttributes"]["key"]["Value"] for m in topic.received()]
    assert sorted(keys) == sorted(a.key for a in batch), "each alert published once"
    assert outcome(metrics, "published") == 6


async def test_a_dead_claimants_alert_is_taken_over_once_its_claim_stands_still(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    topic = Topic(stack, moto_endpoint)
    (stuck,) = alerts(1)
    topic.dynamodb.put_item(  # a worker claimed it, then died before publishing
        TableName=topic.ledger,
        Item={
            "alertId": {"S": stuck.id},
            "state": {"S": "claimed"},
            "owner": {"S": "dead"},
            "claimedAt": {"N": "1"},
        },
    )
    clock = FakeClock()
    sink, metrics = wire_for(clients, topic, "w2", clock)
    wire: Any = sink.wire
    assert await wire.send([stuck]) == [stuck]  # first sight of the claim: wait
    clock.advance(3.9)
    assert await wire.send([stuck]) == [stuck]  # still within the stale time
    assert topic.received() == []
    clock.advance(0.2)
    assert await wire.send([stuck]) == []  # taken over, published, marked
    assert [m["MessageAttributes"]["key"]["Value"] for m in topic.received()] == ["ORD-0"]
    assert outcome(metrics, "taken_over") == 1


async def test_a_claim_that_moves_is_a_live_peer_and_is_not_taken(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    topic = Topic(stack, moto_endpoint)
    (busy,) = alerts(1)
    clock = FakeClock()
    sink, _ = wire_for(clients, topic, "w2", clock)
    wire: Any = sink.wire
    for claimed_at in ("1", "2", "3"):  # the peer claims again and again (its retries)
        topic.dynamodb.put_item(
            TableName=topic.ledger,
            Item={
                "alertId": {"S": busy.id},
                "state": {"S": "claimed"},
                "owner": {"S": "peer"},
                "claimedAt": {"N": claimed_at},
            },
        )
        assert await wire.send([busy]) == [busy]
        clock.advance(3.0)
    assert topic.received() == []


async def test_a_claimant_that_stood_still_past_its_peers_patience_does_not_publish(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    """w1 claims, then stands still (a stalled loop); w2 sees the claim stand still for
    stale_after_s and takes it over and publishes. w1, back, must find its claim gone
    before publishing — not send a second message — and then find the alert sent."""
    topic = Topic(stack, moto_endpoint)
    (stuck,) = alerts(1)
    mine, theirs = FakeClock(), FakeClock()
    first: Any = wire_for(clients, topic, "w1", mine)[0].wire
    second: Any = wire_for(clients, topic, "w2", theirs)[0].wire
    assert await first._claim(stuck) == "claimed"  # ... and stands still here
    assert await second.send([stuck]) == [stuck]  # first sight of w1's claim
    theirs.advance(4.1)
    assert await second.send([stuck]) == []  # taken over, published, marked
    mine.advance(2.1)  # past the share of stale_after_s in which a claim is safe
    assert await first.send([stuck]) == [stuck]  # its claim is gone: not published here
    assert await first.send([stuck]) == []  # then found sent: done
    assert [m["MessageAttributes"]["key"]["Value"] for m in topic.received()] == ["ORD-0"]


async def test_a_slow_claimant_renews_its_claim_and_publishes_once(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    topic = Topic(stack, moto_endpoint)
    (slow,) = alerts(1)
    clock = FakeClock()
    wire: Any = wire_for(clients, topic, "w1", clock)[0].wire
    assert await wire._claim(slow) == "claimed"
    before = wire._claims.mine[slow.id][0]
    clock.advance(2.1)
    await asyncio.sleep(0.002)  # (claimedAt is in wall milliseconds)
    assert await wire._still_mine(slow)  # the claim, renewed: it moves, so no peer takes it
    key = {"alertId": {"S": slow.id}}
    claim = topic.dynamodb.get_item(TableName=topic.ledger, Key=key)["Item"]
    assert claim["state"] == {"S": "claimed"} and claim["owner"] == {"S": "w1"}
    assert int(claim["claimedAt"]["N"]) > int(before)
    assert await wire.send([slow]) == []
    assert len(topic.received()) == 1


async def test_a_send_cancelled_after_sns_took_the_alert_still_marks_it_sent(
    stack: Stack, moto_endpoint: str, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost lease (or a shutdown) cancels a shard's writes. Cancelled between SNS taking an
    alert and the ledger's mark, the claim would stay ``claimed`` and a peer would take it
    over and publish it again: the orders demo once saw 12 of 25 alerts twice. The publish
    and its mark run to their end; the cancellation then goes on."""
    topic = Topic(stack, moto_endpoint)
    batch = alerts(3)
    slow = [Rule("Publish", "slow_answer", delay_s=1.0)]  # SNS takes it, answers a second later
    with FaultProxy(moto_endpoint, slow) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", proxy.endpoint)
        async with open_clients(services=("sns",)) as through_proxy:
            # a grace far above the proxy's second: a loaded machine must not decide it
            sink, _ = wire_for(through_proxy, topic, "w1", finish_grace_s=15.0)
            writing = asyncio.create_task(sink.write(batch))
            while proxy.forwarded["Publish"] < len(batch):  # every alert is SNS's now
                await asyncio.sleep(0.02)
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing
    clock = FakeClock()
    peer, metrics = wire_for(clients, topic, "w2", clock)
    wire: Any = peer.wire
    assert await wire.send(batch) == [], "found sent, not claimed by a worker that stopped"
    clock.advance(4.1)  # past the claim's patience: nothing is left to take over either
    assert await wire.send(batch) == []
    assert outcome(metrics, "duplicate") == 6 and outcome(metrics, "taken_over") == 0
    assert sorted(m["MessageAttributes"]["key"]["Value"] for m in topic.received()) == sorted(
        a.key for a in batch
    )


async def test_a_claim_whose_answer_was_lost_is_known_as_ours_and_sent_at_once(
    stack: Stack, moto_endpoint: str, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's PutItem is applied but its answer lost: the client sends it again, and its
    condition fails on this worker's own claim. The worker knows its claim by the claimedAt
    it wrote and publishes now, not after a lease duration as for a dead peer's."""
    topic = Topic(stack, moto_endpoint)
    (one,) = alerts(1)

    def first_claim(body: bytes) -> bool:
        return b"attribute_not_exists" in body

    lost = [Rule("PutItem", "lose_answer", limit=1, body=first_claim)]
    with FaultProxy(moto_endpoint, lost) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.endpoint)
        async with open_clients(services=("sns",)) as through_proxy:
            sink, metrics = wire_for(through_proxy, topic, "w1", FakeClock())
            wire: Any = sink.wire
            assert await wire.send([one]) == [], "claimed, published and marked at once"
            assert proxy.injected[("PutItem", "lose_answer")] == 1
    assert outcome(metrics, "published") == 1 and outcome(metrics, "taken_over") == 0
    assert [m["MessageAttributes"]["key"]["Value"] for m in topic.received()] == ["ORD-0"]


async def test_publishing_is_rate_limited_and_what_waits_is_counted(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    """The bucket's clock stands still (a fake one): a loaded machine's slow claims must not
    refill it meanwhile — a CI run once saw no alert wait. 20 go at once (the burst is one
    second's worth), the 10 more each wait their turn at 20 a second."""
    topic = Topic(stack, moto_endpoint)
    sink, metrics = wire_for(clients, topic, "w1", FakeClock(), rate=20)
    started = asyncio.get_running_loop().time()
    assert await sink.write(alerts(30)) == []
    elapsed = asyncio.get_running_loop().time() - started
    assert elapsed >= 0.45  # the last in line waited 10 / 20 s
    assert metrics.registry.get_sample_value("telemax_alerts_held_back_total") == 10
    assert len(topic.received()) == 30


async def test_a_fifo_topic_gets_a_group_and_a_deduplication_id(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    topic = Topic(stack, moto_endpoint, fifo=True)
    sink, _ = wire_for(clients, topic, "w1")
    assert await sink.write(alerts(3)) == []
    assert len(topic.received()) == 3


async def test_a_missing_topic_or_ledger_stops_start_up_with_one_line(
    stack: Stack, moto_endpoint: str, clients: Clients
) -> None:
    topic = Topic(stack, moto_endpoint)
    missing_topic = Settings(
        alert_topic_arn=topic.arn + "-gone", alert_ledger_table=topic.ledger, feed="orders"
    )
    with pytest.raises(ConfigError, match=r"^SNS topic '.*-gone' does not exist$"):
        await check_alerting(clients, missing_topic)
    missing_ledger = Settings(
        alert_topic_arn=topic.arn, alert_ledger_table="no-such-ledger", feed="orders"
    )
    with pytest.raises(ConfigError, match="DynamoDB ledger table 'no-such-ledger' does not"):
        await check_alerting(clients, missing_ledger)
