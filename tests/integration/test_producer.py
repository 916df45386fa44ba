"""`producer generate` against moto's Kinesis: every reading acknowledged and readable."""

from __future__ import annotations

import orjson
import pytest

from tests.support import Stack

pytestmark = pytest.mark.timeout(60)


def read_all(stack: Stack) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for shard in stack.kinesis.list_shards(StreamName=stack.stream)["Shards"]:
        iterator = stack.kinesis.get_shard_iterator(
            StreamName=stack.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while True:
            answer = stack.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            out.extend(orjson.loads(r["Data"]) for r in answer["Records"])
            if not answer["Records"]:
                break
            iterator = answer["NextShardIterator"]
    return out


def test_generate_sends_every_reading(stack: Stack) -> None:
    stack.setup(shards=2)
    done = stack.cli(
        "producer", "generate", "--count", "1200", "--concurrency", "1", "--seed", "7", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert "1200 of 1200 acknowledged, 0 failed" in done.stdout
    readings = read_all(stack)
    assert len(readings) == 1200
    keys = {(r["hardwareID"], r["Timestamp"]) for r in readings}
    assert len(keys) == 1200, "(hardwareID, Timestamp) is unique per reading"
    sample = readings[0]
    assert set(sample) == {"hardwareID", "Timestamp", "Data1", "Data2", "Data3"}
    assert isinstance(sample["Data2"], float) and isinstance(sample["Data1"], str)


def test_generate_with_rate_paces_itself(stack: Stack) -> None:
    stack.setup(shards=1)
    done = stack.cli("producer", "generate", "--count", "300", "--rate", "200", "--quiet")
    assert done.returncode == 0, done.stderr
    seconds = float(done.stdout.split(" s (")[0].rsplit(" ", 1)[1])
    assert 1.0 <= seconds <= 3.0, done.stdout
