"""The segmented destinations ``settings`` ask for — the archive, the insights — over one
segment stream per shard (:mod:`consumer.pipeline.segmented`)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from consumer.config import Settings, feed_of
from consumer.metrics import Metrics
from consumer.pipeline.convert import Record
from consumer.pipeline.pieces import Piece
from consumer.pipeline.segmented import Segmented
from consumer.pipeline.stage import Progress
from kernel.aws import Clients

SEGMENT_CONCURRENCY = 8  # segment commits in flight per worker


def segmented_for(
    settings: Settings, clients: Clients, metrics: Metrics, dynamodb: Any = None
) -> Segmented | None:
    """None when neither the archive nor the insights are on. ``dynamodb``: the insights'
    client, when not ``clients.dynamodb`` (the lean path's). Their modules are imported only
    when one is on: a plain worker starts sooner."""
    if not settings.archive_bucket and not settings.insights:
        return None
    from consumer.insights.kept import batch_facts
    from consumer.insights.store import insights_committer
    from consumer.pipeline.archiver import archive_committer, archive_target, packed_lines
    from consumer.pipeline.entries import entries_of

    slots = asyncio.Semaphore(SEGMENT_CONCURRENCY)
    found = [
        c
        for c in (
            archive_committer(settings, clients, metrics, slots),
            insights_committer(settings, clients, metrics, slots, dynamodb),
        )
        if c is not None
    ]
    if not found:
        return None

    target = archive_target(settings)
    spec = feed_of(settings).insights
    facts = functools.partial(batch_facts, spec) if settings.insights and spec is not None else None
    feed = feed_of(settings).name
    raw_json = target is not None and target.raw_json

    def entries(
        progress: Progress, records: Sequence[Record], stream: str, shard_id: str
    ) -> list[Piece]:
        return entries_of(
            progress,
            records,
            feed,
            stream,
            shard_id,
            raw_json,
            lines=target is not None,
            facts=facts,
        )

    return Segmented(
        found,
        entries,
        settings.archive_max_bytes,
        settings.archive_max_age_s,
        pack=packed_lines if target is not None else None,
    )
