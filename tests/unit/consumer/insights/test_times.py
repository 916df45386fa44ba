"""An event's time to its epoch second: as ``datetime.fromisoformat`` reads it, memoised or
not, a text at a time, a batch of texts or a batch of an encoder's bytes."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from consumer.insights import memo, times
from consumer.insights.times import epoch_second, seconds_of, seconds_of_bytes


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03T10:00:00Z",
        "2026-12-03T10:00:00.999999Z",
        "2026-12-03T10:00:00.Z",
        "2026-12-03T10:00:00.1234567890Z",
        "2026-12-03 10:00:59.5Z",
        "2026-12-03T10:00:00+02:00",
        "2026-12-03T10:00:00.5+02:00",
        "2026-12-03T10:00:00",
        "1969-12-31T23:59:59.5Z",
        "2026-12-03T10:00:60Z",
        "2026-12-03T10:00:00.12xZ",
        "2026-12-03T10:00:00.\u0661Z",  # an Arabic-Indic digit
        "2026-02-30T10:00:00Z",
        "20261203T100000Z",
        "yesterday",
        "",
    ],
)
def test_the_event_second_is_what_fromisoformat_reads_memoised_or_not(text: str) -> None:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        expected = None
    else:
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        expected = math.floor(when.timestamp())
    assert epoch_second(text) == expected
    assert epoch_second(text) == expected  # memoised


USUAL = [
    "2026-12-03T10:00:00.123456Z",
    "2026-12-03T10:00:01.000001Z",
    "2026-12-03T10:05:00.999999Z",
    "2026-12-31T23:59:59.500000Z",
]
# each unusual in one way: a tail, a width, a separator, a date, a non-ASCII character
ODD = [
    "2026-12-03T10:00:00Z",
    "2026-12-03T10:00:00.Z",
    "2026-12-03T10:00:00.12Z",
    "2026-12-03T10:00:00.1234567Z",
    "2026-12-03T10:00:00.12345xZ",
    "2026-12-03T10:00:00.1234567",
    "2026-12-03T10:00:00+02:00.0Z",
    "2026-12-03 10:00:00.123456Z",
    "2026/12/03T10:00:00.123456Z",
    "2026-02-30T10:00:00.123456Z",
    "2026-12-03T10:00:0\u0661.123456Z",
    "2026-12-03T10:00:00.12345\u0661Z",
    "yesterday",
    "",
]


def expected(texts: list[str]) -> list[int | None]:
    """Each text read on its own, as fromisoformat reads it."""
    found: list[int | None] = []
    for text in texts:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            found.append(None)
            continue
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        found.append(math.floor(when.timestamp()))
    return found


@pytest.mark.parametrize("seed", range(12))
def test_a_batchs_bytes_give_the_seconds_each_text_gives(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Usual times of one width (the encoder's batch, read without a decode), and the same
    with one odd time among them; with a memo cleared as it fills, or not."""
    rng = random.Random(seed)
    if seed % 3 == 0:
        monkeypatch.setattr(memo, "MEMO_SIZE", 3)
    monkeypatch.setattr(times, "_BYTE_SECONDS", {})
    monkeypatch.setattr(times, "_SECONDS", {})
    for _ in range(20):
        base = rng.randrange(1_700_000_000, 1_800_000_000)
        batch = [
            datetime.fromtimestamp(base + rng.randrange(900) + rng.random(), UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
            for _ in range(rng.randrange(1, 60))
        ]
        if seed % 2:
            batch[rng.randrange(len(batch))] = rng.choice(ODD + USUAL)
        assert seconds_of_bytes([t.encode() for t in batch]) == expected(batch)
        assert seconds_of(list(batch)) == expected(batch)


@pytest.mark.parametrize("text", ODD + USUAL)
def test_a_batch_of_one_odd_width_or_tail_gives_each_texts_second(text: str) -> None:
    """Every time of the batch alike (one width), odd in the same way: the columns of
    characters checked say so, or the head is what it says."""
    batch = [text] * 3
    assert seconds_of_bytes([t.encode() for t in batch]) == expected(batch)
    assert seconds_of_bytes([t.encode() for t in batch]) == expected(batch)  # memoised


def test_no_times_give_no_seconds() -> None:
    assert seconds_of_bytes([]) == []
