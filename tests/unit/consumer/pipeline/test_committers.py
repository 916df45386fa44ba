"""Which segmented destinations a worker's settings make, and how their buffers hold lines."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.config import Settings
from consumer.metrics import Metrics
from consumer.pipeline.archiver import packed_lines
from consumer.pipeline.committers import segmented_for
from kernel.aws import Clients


def clients() -> Any:
    return Clients(kinesis=None, dynamodb=None, session=None, extra={"s3": None})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("archive", "insights", "names", "packed"),
    [
        (True, False, ["archive"], True),
        (True, True, ["archive", "insights"], True),
        (False, True, ["insights"], False),
    ],
)
def test_the_archive_holds_its_runs_packed_and_the_insights_alone_hold_no_lines(
    archive: bool, insights: bool, names: list[str], packed: bool
) -> None:
    settings = Settings(stream="s", archive_bucket="b" if archive else "", insights=insights)
    segmented = segmented_for(settings, clients(), Metrics("s"))
    assert segmented is not None
    assert [c.name for c in segmented.committers] == names
    assert segmented.pack is (packed_lines if packed else None)
    assert segmented.for_shard("shardId-0", lambda: 0.0).buffer._pack is segmented.pack


def test_neither_destination_makes_no_segments() -> None:
    assert segmented_for(Settings(stream="s"), clients(), Metrics("s")) is None
