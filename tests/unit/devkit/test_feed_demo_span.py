"""The feed demo's insights report covers the windows of every record it produced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devkit.feed_demo import report_span
from producer.schemas import records


def test_the_report_reaches_the_newest_produced_window_near_the_turn_of_an_hour() -> None:
    start = datetime(2026, 12, 4, 10, 59, 54, tzinfo=UTC)  # as CI's failed run
    created = [
        datetime.fromisoformat(record["createdAt"])
        for record, _ in records("orders", 800, devices=200, seed=7, start=start)
    ]
    now = start + timedelta(seconds=5)  # the demo reports a few seconds after producing
    span = report_span(now)
    newest_hour = max(created).replace(minute=0, second=0, microsecond=0)
    assert newest_hour > now  # the case that lost records
    assert datetime.fromisoformat(span["start"]) <= min(created)
    assert newest_hour < datetime.fromisoformat(span["end"])
