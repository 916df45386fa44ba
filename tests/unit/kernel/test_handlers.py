"""The handler contract's encoders: how a handler offers them, how the pipeline finds them."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.feeds import telemax
from kernel.handlers import Encoded, Item, batch_encoder_of, encoder_of, with_encoder

READINGS = [
    b'{"hardwareID":"HW-1","Timestamp":"2026-01-01T00:00:00Z","Data1":"L","Data2":1,"Data3":2}',
    b"{not json",
    b'{"hardwareID":"HW-2","Timestamp":"2026-01-01T00:00:01Z","Data1":"L","Data2":1,"Data3":2}',
]


def plain(data: bytes) -> Item:
    return telemax.to_item(data)


def test_a_handler_without_an_encoder_has_neither() -> None:
    assert encoder_of(plain) is None
    assert batch_encoder_of(plain) is None


def test_an_encoder_alone_encodes_a_batch_record_by_record() -> None:
    handler = with_encoder(telemax.encode)(lambda data: telemax.to_item(data))
    encode_batch = batch_encoder_of(handler)
    assert encoder_of(handler) is telemax.encode
    assert encode_batch is not None
    assert encode_batch(READINGS) == [telemax.encode(data) for data in READINGS]
    assert encode_batch([]) == []


def test_a_batch_encoder_offered_is_the_one_found() -> None:
    asked: list[Sequence[bytes]] = []

    def encode_batch(datas: Sequence[bytes]) -> list[Encoded | None]:
        asked.append(datas)
        return [telemax.encode(data) for data in datas]

    handler = with_encoder(telemax.encode, encode_batch)(lambda data: telemax.to_item(data))
    found = batch_encoder_of(handler)
    assert found is not None
    assert found(READINGS) == [telemax.encode(data) for data in READINGS]
    assert asked == [READINGS]
    assert batch_encoder_of(telemax.to_item) is telemax.encode_batch
