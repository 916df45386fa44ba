"""Which tailed lines are shipped and which are rejected, and why."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from consumer.feeds.telemax import to_item
from kernel.kpl.encode import Entry
from producer.tail.lines import LineChecker, Rejected, reject_record
from producer.tail.machine import FileId, Line

GOOD = b'{"hardwareID":"HW-1","Timestamp":"2026-01-01T00:00:00Z","Data2":1.5}'


def line(data: bytes, too_long: bool = False) -> Line:
    return Line(FileId(1, 2), "/l/app.log", 0, data, 100, too_long)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "empty_line", id="empty"),
        pytest.param(b"   \t", "empty_line", id="blank"),
        pytest.param(b"not json", "not_json", id="not-json"),
        pytest.param(b'{"hardwareID": "HW-1"', "not_json", id="cut-short"),
        pytest.param(b"[1, 2]", "not_object", id="array"),
        pytest.param(b'{"Timestamp":"2026-01-01T00:00:00Z"}', "bad_partition_key", id="no-key"),
        pytest.param(b'{"hardwareID":""}', "bad_partition_key", id="empty-key"),
        pytest.param(b'{"hardwareID":true}', "bad_partition_key", id="bool-key"),
        pytest.param(b'{"hardwareID":{"a":1}}', "bad_partition_key", id="object-key"),
        pytest.param(b'{"hardwareID":"' + b"k" * 257 + b'"}', "bad_partition_key", id="long-key"),
        pytest.param(b'{"hardwareID":"HW-1"}', "missing_field", id="telemax-no-timestamp"),
        pytest.param(
            b'{"hardwareID":"HW-1","Timestamp":"yesterday"}', "bad_timestamp", id="telemax-time"
        ),
        pytest.param(b"\xff\xfe", "not_json", id="binary"),
    ],
)
def test_rejected_lines(data: bytes, reason: str) -> None:
    verdict = LineChecker("hardwareID", to_item).check(line(data))
    assert isinstance(verdict, Rejected)
    assert verdict.reason == reason


def test_good_line_is_shipped_as_it_is() -> None:
    source = line(GOOD)
    verdict = LineChecker("hardwareID", to_item).check(source)
    assert verdict == Entry(GOOD, "HW-1")
    assert isinstance(verdict, Entry) and verdict.context is source


def test_integer_key_and_json_only_mode() -> None:
    verdict = LineChecker("tripID").check(line(b'{"tripID": 42, "anything": [1]}'))
    assert isinstance(verdict, Entry) and verdict.partition_key == "42"


def test_too_long_line_is_rejected_without_parsing() -> None:
    verdict = LineChecker("hardwareID").check(line(b"{", too_long=True))
    assert verdict == Rejected("too_long", "line longer than the limit")


def test_line_plus_key_over_the_record_limit_is_rejected() -> None:
    data = b'{"k":"abc","pad":"' + b"p" * (1024 * 1024 - 20) + b'"}'
    verdict = LineChecker("k").check(line(data))
    assert isinstance(verdict, Rejected) and verdict.reason == "too_large"


def test_reject_record_says_where_and_why() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    raw = reject_record(line(b"bad \xff line"), Rejected("not_json", "x" * 400), at)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    record = orjson.loads(raw)
    assert record == {
        "time": "2026-01-02T03:04:05+00:00",
        "path": "/l/app.log",
        "end_offset": 100,
        "reason": "not_json",
        "detail": "x" * 300,
        "line": "bad \\xff line",
    }
