"""The lean path's HTTP/1.1 answer parser, fed bytes (no sockets): byte tables, and every way
of splitting them as they might arrive."""

from __future__ import annotations

import pytest

from consumer.adapters.http1 import Answer, AnswerParser

OK_JSON = (
    b"HTTP/1.1 200 OK\r\n"
    b"x-amzn-RequestId: abc\r\n"
    b"Content-Type: application/x-amz-json-1.1\r\n"
    b"Content-Length: 13\r\n"
    b"\r\n"
    b'{"Records":1}'
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    b"5;ext=1\r\nhello\r\n"
    b"1\r\n \r\n"
    b"5\r\nworld\r\n"
    b"0\r\n"
    b"X-Trailer: yes\r\n"
    b"\r\n"
)


def parse(*pieces: bytes) -> Answer | None:
    parser = AnswerParser()
    parser.start()
    answer = None
    for piece in pieces:
        assert answer is None, "answered before the last piece"
        parser.feed(piece)
        answer = parser.answer()
    return answer


@pytest.mark.parametrize(
    ("raw", "status", "headers", "body"),
    [
        pytest.param(
            OK_JSON,
            200,
            {
                "x-amzn-requestid": "abc",
                "content-type": "application/x-amz-json-1.1",
                "content-length": "13",
            },
            b'{"Records":1}',
            id="content-length",
        ),
        pytest.param(
            CHUNKED,
            200,
            {"transfer-encoding": "chunked"},
            b"hello world",
            id="chunked-extensions-trailer",
        ),
        pytest.param(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 400, None, b"", id="empty"
        ),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", 204, {}, b"", id="no-length"),
        pytest.param(
            b"HTTP/1.0 503 Slow Down\r\nCONTENT-LENGTH:  2 \r\nConnection: close\r\n\r\nno",
            503,
            {"content-length": "2", "connection": "close"},
            b"no",
            id="http-1.0-case-and-spaces",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
            200,
            None,
            b"",
            id="chunked-empty",
        ),
    ],
)
def test_answers(raw: bytes, status: int, headers: dict[str, str] | None, body: bytes) -> None:
    answer = parse(raw)
    assert answer is not None
    assert answer[0] == status
    if headers is not None:
        assert answer[1] == headers
    assert answer[2] == body


@pytest.mark.parametrize("raw", [OK_JSON, CHUNKED], ids=["content-length", "chunked"])
def test_every_split_of_the_bytes_gives_the_same_answer(raw: bytes) -> None:
    whole = parse(raw)
    for cut in range(1, len(raw)):
        assert parse(raw[:cut], raw[cut:]) == whole, cut
    assert parse(*(raw[i : i + 1] for i in range(len(raw)))) == whole


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer", id="not-http"),
        pytest.param(b"HTTP/1.1\r\n\r\n", "not an HTTP/1.x answer", id="no-status"),
        pytest.param(b"HTTP/1.1 abc OK\r\n\r\n", "invalid literal", id="bad-status"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "invalid literal", id="bad-length"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "negative", id="negative-length"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "invalid literal",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n",
            "negative",
            id="negative-chunk",
        ),
    ],
)
def test_malformed_answers_raise(raw: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse(raw)


def test_headers_without_an_end_are_refused_past_the_limit() -> None:
    parser = AnswerParser(max_header_bytes=100)
    parser.start()
    parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 10)
    assert parser.answer() is None  # 77 bytes: still waiting
    parser.feed(b"X: y\r\n" * 10)
    with pytest.raises(ValueError, match="too large"):
        parser.answer()


def test_start_drops_what_came_before_and_a_second_exchange_parses_alike() -> None:
    parser = AnswerParser()
    parser.feed(b"stray bytes from an earlier exchange")
    parser.start()
    parser.feed(OK_JSON)
    first = parser.answer()
    parser.start()
    parser.feed(CHUNKED)
    assert first is not None and first[2] == b'{"Records":1}'
    assert parser.answer() == (200, {"transfer-encoding": "chunked"}, b"hello world")


def large_answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s%s" % (len(body), body, extra)


@pytest.mark.parametrize("piece", [1_000, 65_536, 262_144])
@pytest.mark.parametrize("extra", [b"", b"HTTP/1.1 200 OK\r\n"], ids=["exact", "bytes-after"])
def test_a_large_body_in_pieces_is_the_body(piece: int, extra: bytes) -> None:
    """A body of known length that arrives over many reads (a GetRecords answer of
    megabytes) is its bytes, whatever the reads' size; what follows it is nobody's."""
    body = bytes(range(256)) * 4_000  # 1 MB
    raw = large_answer(body, extra)
    answer = parse(*(raw[i : i + piece] for i in range(0, len(raw), piece)))
    assert answer == (200, {"content-length": str(len(body))}, body)


@pytest.mark.parametrize("extra", [b"", b"left over"], ids=["exact", "bytes-after"])
def test_a_body_that_came_with_its_head_is_the_body(extra: bytes) -> None:
    answer = parse(large_answer(b'{"UnprocessedItems":{}}', extra))
    assert answer is not None and answer[2] == b'{"UnprocessedItems":{}}'


def test_an_answer_cut_short_leaves_nothing_to_the_next_exchange() -> None:
    """An exchange given up mid-body (a read timeout): the next one's answer is its own."""
    parser = AnswerParser()
    parser.start()
    parser.feed(large_answer(b"a" * 100)[:60])
    assert parser.answer() is None
    parser.feed(b"a" * 10)
    assert parser.answer() is None
    parser.start()
    parser.feed(OK_JSON[:50])
    assert parser.answer() is None
    parser.feed(OK_JSON[50:])
    answer = parser.answer()
    assert answer is not None and answer[2] == b'{"Records":1}'
