"""Producer metrics (prefix ``telemax_producer_``), served only when ``--metrics-port`` is given.

One registry per process run, so tests that build several producers stay isolated. Counters
move once per PutRecords call or per poll, never once per record.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PUT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.acknowledged = Counter(
            "telemax_producer_records_acknowledged",
            "User records Kinesis acknowledged",
            ("stream",),
            registry=r,
        )
        self.failed = Counter(
            "telemax_producer_records_failed",
            "User records given up after the retry budget (generate only)",
            ("stream",),
            registry=r,
        )
        self.throttled = Counter(
            "telemax_producer_records_throttled",
            "User records answered with a throttling error and sent again",
            ("stream",),
            registry=r,
        )
        self.put_seconds = Histogram(
            "telemax_producer_put_records_seconds",
            "Latency of one PutRecords call",
            ("stream",),
            buckets=PUT_BUCKETS,
            registry=r,
        )
        self.aws_errors = Counter(
            "telemax_producer_aws_errors",
            "Failed AWS calls that were retried, by API and error",
            ("api", "error"),
            registry=r,
        )
        self.lines_read = Counter(
            "telemax_producer_lines_read", "Lines read from tailed files", registry=r
        )
        self.lines_rejected = Counter(
            "telemax_producer_lines_rejected",
            "Lines written to the reject file instead of the stream",
            ("reason",),
            registry=r,
        )
        self.rotations = Counter(
            "telemax_producer_rotations",
            "Tailed files rotated: renamed or deleted (rename) or truncated (truncate)",
            ("kind",),
            registry=r,
        )
        self.files_open = Gauge(
            "telemax_producer_files_open", "Files the tail holds open", registry=r
        )
        self.buffered = Gauge(
            "telemax_producer_buffered_records",
            "Records read but not yet acknowledged (queued or in flight)",
            registry=r,
        )
        self.lag_bytes = Gauge(
            "telemax_producer_lag_bytes",
            "Bytes in the open files after the last acknowledged line",
            registry=r,
        )
        self.state_saves = Counter(
            "telemax_producer_state_saves", "Offset state file writes", registry=r
        )
