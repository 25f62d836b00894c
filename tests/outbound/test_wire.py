"""The client's wire format: reply parsing and the DATA encoding, byte by byte."""

from __future__ import annotations

import pytest

from maild.queue.wire import (
    MAX_REPLY_LINE,
    Capabilities,
    ProtocolError,
    Reply,
    ReplyParser,
    encode_data,
    needs_smtputf8,
    normalize_line_endings,
)


def unstuff(data: bytes) -> bytes:
    """What a receiving server makes of a DATA payload (RFC 5321 §4.5.2)."""
    assert data.endswith(b"\r\n.\r\n") or data == b".\r\n"
    lines = data[:-3].split(b"\r\n")[:-1]
    assert b"." not in lines, "an end-of-data line inside the message"
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


@pytest.mark.parametrize(("raw", "wire"), [
    (b"a\r\n", b"a\r\n.\r\n"),
    (b"", b".\r\n"),
    (b"no final newline", b"no final newline\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"a\r\n.\r\n.b\r\n..\r\n", b"a\r\n..\r\n..b\r\n...\r\n.\r\n"),
    (b"bare\nlf\n.x\n", b"bare\r\nlf\r\n..x\r\n.\r\n"),
    (b"bare\rcr\r.\r", b"bare\r\ncr\r\n..\r\n.\r\n"),
    (b"crlf\r\n\r\nnot crcrlf\r\r\n", b"crlf\r\n\r\nnot crcrlf\r\n\r\n.\r\n"),
])
def test_encode_data(raw: bytes, wire: bytes) -> None:
    assert encode_data(raw) == wire
    assert unstuff(wire) == normalize_line_endings(raw)


def test_dots_at_every_offset_survive_any_split() -> None:
    raw = b"".join(b"." * (i % 5) + b"x" * (i % 7) + b"\r\n" for i in range(5000))
    wire = encode_data(raw)
    assert unstuff(wire) == raw
    # The encoding is a function of the whole message: a receiver reading the stream in
    # chunks of any size sees the same lines.
    for size in (1, 2, 3, 4096, 16384):
        chunks = [wire[i:i + size] for i in range(0, len(wire), size)]
        assert unstuff(b"".join(chunks)) == raw


def test_reply_parser_multiline_and_split() -> None:
    parser = ReplyParser()
    data = b"250-mx.remote.test\r\n250-SIZE 1000\r\n250-PIPELINING\r\n250 STARTTLS\r\n220 go\r\n"
    replies = [r for i in range(len(data)) for r in parser.feed(data[i:i + 1])]
    assert replies == [Reply(250, ("mx.remote.test", "SIZE 1000", "PIPELINING", "STARTTLS")),
                       Reply(220, ("go",))]
    caps = Capabilities.from_ehlo(replies[0])
    assert "PIPELINING" in caps and "STARTTLS" in caps and caps.size == 1000


def test_reply_enhanced_code_and_text() -> None:
    reply = ReplyParser().feed(b"550-5.1.1 no such user\r\n550 5.1.1 \x1b[31mreally\r\n")[0]
    assert reply.enhanced == "5.1.1"
    assert str(reply) == "550 5.1.1 no such user 5.1.1  [31mreally"
    assert Reply(451, ("try later",)).enhanced == "4.0.0"
    assert Reply(451, ("5.1.1 mismatched class",)).enhanced == "4.0.0"


@pytest.mark.parametrize("data", [b"hello\r\n", b"250x\r\n", b"99 no\r\n", b"250-a\r\n251 b\r\n",
                                  b"6xx\r\n", b"2" * (MAX_REPLY_LINE + 1)])
def test_reply_parser_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(data)


def test_reply_parser_bounds_line_count() -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(b"250-x\r\n" * 1000)


def test_needs_smtputf8() -> None:
    assert not needs_smtputf8("a@x.test", ["b@y.test"], "Subject: x\r\n\r\nbödy".encode())
    assert needs_smtputf8("a@x.test", ["bö@y.test"], b"Subject: x\r\n\r\n")
    assert needs_smtputf8("a@x.test", ["b@y.test"], "Subject: grüße\r\n\r\n".encode())
