"""Prometheus metrics (prefix ``telemax_``). One registry per worker so tests stay isolated.

Hot paths update counters once per batch (``inc(n)``), never once per record. Counters are
per stream: they must stay monotonic while shards move between workers, and a worker that held
thousands of shards in its life must not carry a series for each. What is per shard is state
(lag, checkpoint age), and it is removed when the shard leaves the worker (``forget_shard``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, stream: str, registry: CollectorRegistry | None = None) -> None:
        self.stream = stream
        self.registry = registry or CollectorRegistry()
        r = self.registry
        shard = ("stream", "shard")
        stream_only = ("stream",)
        self.records_received = Counter(
            "telemax_records_received", "Records read from Kinesis", stream_only, registry=r
        )
        self.records_written = Counter(
            "telemax_records_written",
            "Records durably written to the table",
            stream_only,
            registry=r,
        )
        self.records_skipped = Counter(
            "telemax_records_skipped",
            "KPL user records dropped as the KCL drops them (hash key outside the shard's range)",
            ("stream", "reason"),
            registry=r,
        )
        self.records_dead_lettered = Counter(
            "telemax_records_dead_lettered",
            "Records written to the dead-letter table instead",
            ("stream", "reason"),
            registry=r,
        )
        self.handler_errors = Counter(
            "telemax_handler_errors",
            "Records whose handler raised an unexpected error (each attempt counts)",
            ("stream",),
            registry=r,
        )
        self.batch_write_seconds = Histogram(
            "telemax_batch_write_seconds",
            "Latency of one BatchWriteItem request",
            ("table",),
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.unprocessed_retries = Counter(
            "telemax_unprocessed_items_retried",
            "Items DynamoDB returned as UnprocessedItems and we sent again",
            ("table",),
            registry=r,
        )
        # Every destination (table, dead_letters, alerts, archive) through the one sink engine
        self.destination_written = Counter(
            "telemax_destination_written",
            "Entries made durable in a destination (items, dead letters, alerts, objects)",
            ("destination",),
            registry=r,
        )
        self.destination_failed = Counter(
            "telemax_destination_failed",
            "Failed requests to a destination, by error (each is retried or raised)",
            ("destination", "error"),
            registry=r,
        )
        self.destination_retried = Counter(
            "telemax_destination_retried",
            "Entries a destination left unprocessed and we sent again",
            ("destination",),
            registry=r,
        )
        self.destination_refused = Counter(
            "telemax_destination_refused",
            "Entries a destination refuses outright (dead-lettered)",
            ("destination",),
            registry=r,
        )
        self.destination_seconds = Histogram(
            "telemax_destination_seconds",
            "Latency of one request to a destination",
            ("destination",),
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "telemax_alerts",
            "Alerts by outcome: published, duplicate (the ledger says sent), taken_over (a dead "
            "claimant's claim, published again)",
            ("feed", "rule", "outcome"),
            registry=r,
        )
        self.alerts_held_back = Counter(
            "telemax_alerts_held_back",
            "Times an alert waited for the publish rate limit (it is published after the wait)",
            registry=r,
        )
        self.insights_records = Counter(
            "telemax_insights_records",
            "Records counted in the insights' windows by this worker (segments committed, "
            "not adopted): kind counted or late (beyond the allowed lateness)",
            ("feed", "kind"),
            registry=r,
        )
        self.insights_window = Gauge(
            "telemax_insights_current_window_start_seconds",
            "Start (epoch seconds) of the newest window this worker has counted records in",
            ("feed",),
            registry=r,
        )
        self.insights_window_records = Gauge(
            "telemax_insights_current_window_records",
            "Records this worker counted in that newest window (sum over the workers: the "
            "window's count so far)",
            ("feed",),
            registry=r,
        )
        self.sqs_messages = Counter(
            "telemax_sqs_messages",
            "SQS messages by outcome: deleted (done), left (not done: they come back), poison "
            "(dead-lettered after too many receives)",
            ("queue", "outcome"),
            registry=r,
        )
        self.fanout_subscriptions = Counter(
            "telemax_fanout_subscriptions",
            "SubscribeToShard calls that opened a subscription (enhanced fan-out)",
            stream_only,
            registry=r,
        )
        self.fanout_resubscriptions = Counter(
            "telemax_fanout_resubscriptions",
            "Subscriptions opened again, by cause: ended (AWS ends each after 5 minutes), "
            "in_use, reset, silent, throttled, failure",
            ("stream", "cause"),
            registry=r,
        )
        self.fanout_event_latency = Histogram(
            "telemax_fanout_event_latency_seconds",
            "From an event's newest record's arrival in Kinesis to the event reaching the worker",
            stream_only,
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.sqs_visibility_extended = Counter(
            "telemax_sqs_visibility_extended",
            "In-flight SQS messages whose visibility was extended",
            ("queue",),
            registry=r,
        )
        self.throttles = Counter(
            "telemax_throttles", "Throttling answers by API", ("api",), registry=r
        )
        self.aws_errors = Counter(
            "telemax_aws_errors", "Failed AWS calls by API and error", ("api", "error"), registry=r
        )
        self.records_in_flight = Gauge(
            "telemax_records_in_flight",
            "Records fetched from Kinesis and not yet durable (bounded by the worker's budget)",
            registry=r,
        )
        self.millis_behind = Gauge(
            "telemax_millis_behind_latest",
            "MillisBehindLatest of the last GetRecords answer",
            shard,
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "telemax_checkpoint_age_seconds",
            "Seconds since this worker last checkpointed the shard",
            shard,
            registry=r,
        )
        self.checkpoints = Counter(
            "telemax_checkpoints", "Checkpoints written", stream_only, registry=r
        )
        self.leases_held = Gauge(
            "telemax_leases_held", "Leases this worker holds", ("stream",), registry=r
        )
        self.leases_taken = Counter(
            "telemax_leases_taken",
            "Leases this worker started on: granted by the leader",
            ("stream", "reason"),
            registry=r,
        )
        self.leases_handed_back = Counter(
            "telemax_leases_handed_back",
            "Leases handed back at the leader's request, for balance",
            ("stream",),
            registry=r,
        )
        self.leases_assigned = Counter(
            "telemax_leases_assigned",
            "Leases this worker assigned to a member while it led",
            ("stream",),
            registry=r,
        )
        self.leader = Gauge(
            "telemax_leader", "1 while this worker is the elected leader", ("stream",), registry=r
        )
        self.leader_round = Gauge(
            "telemax_leader_last_round_timestamp_seconds",
            "Unix time of the last completed assignment round of this worker as leader",
            ("stream",),
            registry=r,
        )
        self.last_beat = Gauge(
            "telemax_last_beat_timestamp_seconds",
            "Unix time this worker's last answered beat was sent",
            ("stream",),
            registry=r,
        )
        self.lease_table_requests = Counter(
            "telemax_lease_table_requests",
            "Requests to the lease and membership tables, by table and operation",
            ("table", "operation"),
            registry=r,
        )
        self.lease_table_capacity = Counter(
            "telemax_lease_table_capacity_units",
            "Capacity units the lease and membership tables reported consumed, by operation",
            ("table", "operation"),
            registry=r,
        )
        self.leases_lost = Counter(
            "telemax_leases_lost", "Leases lost to a peer or self-fenced", ("stream",), registry=r
        )
        self.leases_released = Counter(
            "telemax_leases_released",
            "Leases released on shutdown or shard end",
            ("stream",),
            registry=r,
        )
        self.shards_ended = Counter(
            "telemax_shards_ended",
            "Shards read to their end and checkpointed at SHARD_END",
            ("stream",),
            registry=r,
        )
        self.leases_deleted = Counter(
            "telemax_leases_deleted",
            "Leases of finished shards deleted after their children started",
            ("stream",),
            registry=r,
        )
        self.leases_created = Counter(
            "telemax_leases_created", "Leases created for new shards", ("stream",), registry=r
        )
        self.shards_gone = Counter(
            "telemax_shards_gone",
            "Shards Kinesis no longer knows (past retention), finished as if read to their end",
            ("stream",),
            registry=r,
        )
        self.lease_writes_recovered = Counter(
            "telemax_lease_writes_recovered",
            "Lease writes whose condition failed although our write had been applied "
            "(lost answer, or an abandoned write): recognised by reading the lease again",
            ("stream", "operation"),
            registry=r,
        )
        # Series the alerts compare across pods exist from the start: a child is otherwise
        # made by its first set() or inc(). The round timestamp stays 0 until this worker
        # leads, so that with no leader the fleet's maximum is 0 and TelemaxNoLeader fires
        # even after the only pod that ever led is gone.
        for child in (self.leader_round, self.leases_lost, self.leases_handed_back):
            child.labels(stream)

    @property
    def per_shard(self) -> tuple[Gauge, ...]:
        """Every metric labelled by shard: each is forgotten when the shard leaves."""
        return (self.millis_behind, self.checkpoint_age)

    def shard_age_tracker(self, shard_id: str) -> Callable[[], None]:
        """Return a function that marks "checkpointed now"; the gauge reports the age."""
        last = [time.monotonic()]
        self.checkpoint_age.labels(self.stream, shard_id).set_function(
            lambda: time.monotonic() - last[0]
        )

        written = self.checkpoints.labels(self.stream)

        def mark() -> None:
            last[0] = time.monotonic()
            written.inc()

        return mark

    def forget_shard(self, shard_id: str) -> None:
        """Drop per-shard series when the shard leaves this worker."""
        for metric in self.per_shard:
            with contextlib.suppress(KeyError):
                metric.remove(self.stream, shard_id)
