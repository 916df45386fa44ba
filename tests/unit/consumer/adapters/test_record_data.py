"""consumer.adapters.record_data: records' base64 ``Data`` as bytes — pybase64's bytes where it
reads the text, ``binascii``'s (as botocore decodes) where it does not."""

from __future__ import annotations

import binascii
import random
from typing import Any

import pytest

from consumer.adapters import record_data
from consumer.adapters.record_data import decode_each

pytestmark = pytest.mark.timeout(30)


def decoded(*texts: str) -> list[Any]:
    records: list[dict[str, Any]] = [
        {"Data": text, "SequenceNumber": str(n)} for n, text in enumerate(texts)
    ]
    decode_each(records)
    assert [r["SequenceNumber"] for r in records] == [str(n) for n in range(len(texts))]
    return [r["Data"] for r in records]


def test_pybase64_is_the_decoder_here() -> None:
    assert record_data._fast is not None  # (else every other test here tests binascii alone)


def test_valid_base64_of_any_bytes_gives_them_back() -> None:
    rnd = random.Random(16)
    blobs = [rnd.randbytes(rnd.randint(0, 300)) for _ in range(2_000)]
    texts = [binascii.b2a_base64(blob, newline=False).decode() for blob in blobs]
    assert decoded(*texts) == blobs
    # MIME's line breaks, as some writers leave them: dropped, as binascii drops them
    wrapped = [binascii.b2a_base64(blob).decode() for blob in blobs[:200]]
    assert decoded(*wrapped) == blobs[:200]


def test_characters_outside_the_alphabet_are_dropped_as_binascii_drops_them() -> None:
    rnd = random.Random(5)
    texts = []
    for _ in range(2_000):
        text = binascii.b2a_base64(rnd.randbytes(rnd.randint(1, 60)), newline=False).decode()
        at = rnd.randrange(len(text))
        texts.append(text[:at] + rnd.choice(" \t\r\n*-_.!") + text[at:])
    assert decoded(*texts) == [binascii.a2b_base64(text) for text in texts]


def test_text_pybase64_refuses_is_read_as_binascii_reads_it() -> None:
    # padding before the end: binascii stops there, pybase64 refuses it
    assert decoded("j7k=tsjs0s", "QUJD") == [binascii.a2b_base64("j7k=tsjs0s"), b"ABC"]


def test_text_neither_reads_raises_as_before() -> None:
    with pytest.raises(binascii.Error, match="padding"):
        decoded("abc")
    with pytest.raises(ValueError, match="ASCII"):
        decoded("QUJD", "é")


def test_without_pybase64_binascii_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_data, "_fast", None)
    assert decoded("QUJD", "j7k=tsjs0s", "QU JD*") == [b"ABC", b"\x8f\xb9", b"ABC"]
    with pytest.raises(binascii.Error):
        decoded("abc")
