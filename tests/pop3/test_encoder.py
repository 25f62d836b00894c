"""The RETR/TOP body encoder (maild.pop3.encoder): byte-stuffing, line ends, TOP's cut,
independent of how the stored message is split into chunks."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from maild.pop3.encoder import MessageEncoder
from maild.store.codec import SHAPE_CLEAN, SHAPE_CRLF, SHAPE_KNOWN, body_shape


def encode(message: bytes, chunks: list[int] | None = None, body_lines: int | None = None, shape: int = 0) -> bytes:
    """Encode ``message`` fed in pieces of the given sizes (the rest in one piece)."""
    encoder = MessageEncoder(body_lines, shape)
    out, pos = [], 0
    for size in chunks or []:
        out.append(encoder.feed(message[pos:pos + size]))
        pos += size
    out.append(encoder.feed(message[pos:]))
    out.append(encoder.finish())
    return b"".join(out)


def decode(response: bytes) -> bytes:
    """What a client makes of a multi-line response: unstuffed lines joined by CRLF."""
    assert response.endswith(b"\r\n.\r\n") or response == b".\r\n"
    lines = response.split(b"\r\n")[:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def normalized(message: bytes) -> bytes:
    """The message with CRLF line ends everywhere and a line end after the last line."""
    text = re.sub(rb"(?<!\r)\n", b"\r\n", message)
    if text.endswith(b"\r") and not text.endswith(b"\r\n"):
        return text + b"\n"  # a lone CR at the very end becomes the last line's CRLF
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


def test_dot_stuffing() -> None:
    assert encode(b".a\r\n..b\r\nc.\r\n.\r\n") == b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n"


def test_last_line_without_crlf_gets_one() -> None:
    assert encode(b"Subject: x\r\n\r\nlast") == b"Subject: x\r\n\r\nlast\r\n.\r\n"
    assert encode(b"Subject: x\r\n\r\n.") == b"Subject: x\r\n\r\n..\r\n.\r\n"


def test_bare_lf_becomes_crlf_and_split_crlf_stays_one() -> None:
    assert encode(b"a\nb\r\nc") == b"a\r\nb\r\nc\r\n.\r\n"
    assert encode(b"a\r\n.b\r\n", chunks=[1, 1]) == b"a\r\n..b\r\n.\r\n"  # CR | LF split


def test_empty_message() -> None:
    assert encode(b"") == b".\r\n"


def test_top_counts_body_lines() -> None:
    msg = b"A: 1\r\nB: 2\r\n\r\nl1\r\n.l2\r\nl3\r\n"
    assert encode(msg, body_lines=0) == b"A: 1\r\nB: 2\r\n\r\n.\r\n"
    assert encode(msg, body_lines=1) == b"A: 1\r\nB: 2\r\n\r\nl1\r\n.\r\n"
    assert encode(msg, body_lines=2) == b"A: 1\r\nB: 2\r\n\r\nl1\r\n..l2\r\n.\r\n"
    assert encode(msg, body_lines=99) == encode(msg)


def test_top_on_a_message_without_body_or_blank_line() -> None:
    assert encode(b"A: 1\r\nB: 2", body_lines=0) == b"A: 1\r\nB: 2\r\n.\r\n"
    assert encode(b"A: 1\r\n\r\n", body_lines=5) == b"A: 1\r\n\r\n.\r\n"


def test_top_stops_reading() -> None:
    encoder = MessageEncoder(1)
    assert encoder.feed(b"A: 1\r\n\r\nfirst\r\nsecond") == b"A: 1\r\n\r\nfirst\r\n"
    assert encoder.done
    assert encoder.feed(b"more\r\n") == b""


def test_header_blank_line_split_across_chunks() -> None:
    msg = b"A: 1\r\n\r\nbody1\r\nbody2\r\n"
    for cut in range(len(msg)):
        assert encode(msg, chunks=[cut], body_lines=1) == b"A: 1\r\n\r\nbody1\r\n.\r\n", cut


lines = st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"a b", b"\r", b"x\ry", b"From x"]), max_size=12)
endings = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    parts = draw(lines)
    out = b"".join(p + draw(endings) for p in parts)
    return out + draw(st.sampled_from([b"", b"tail", b".", b"\r"]))


@given(messages(), st.lists(st.integers(min_value=0, max_value=8), max_size=10))
def test_round_trip_any_chunking(message: bytes, chunks: list[int]) -> None:
    out = encode(message, chunks)
    assert out == encode(message)
    assert decode(out) == normalized(message)
    assert all(not line.startswith(b".") or line.startswith(b"..") or line == b"."
               for line in out.split(b"\r\n")[:-2])
    assert b"\r\n.\r\n" not in out[:-3]


@given(messages(), st.lists(st.integers(min_value=0, max_value=8), max_size=10), st.integers(0, 6))
def test_top_is_a_prefix_with_n_body_lines(message: bytes, chunks: list[int], n: int) -> None:
    whole = decode(encode(message)).split(b"\r\n")[:-1]
    top = decode(encode(message, chunks, body_lines=n)).split(b"\r\n")[:-1]
    assert whole[:len(top)] == top
    if b"" in whole:
        header_end = whole.index(b"") + 1
        assert len(top) == min(len(whole), header_end + n)
    else:
        assert top == whole


def pieces(message: bytes, chunks: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in chunks:
        out.append(message[pos:pos + size])
        pos += size
    return [*out, message[pos:]]


def test_body_shape() -> None:
    assert body_shape([b""]) == SHAPE_CLEAN
    assert body_shape([b"a\r\nb.\r\n"]) == SHAPE_CLEAN
    assert body_shape([b"a\r", b"\nb\r\n"]) == SHAPE_CLEAN  # CRLF split between pieces
    assert body_shape([b".a\r\n"]) == SHAPE_KNOWN | SHAPE_CRLF  # the first line counts
    assert body_shape([b"a\r\n", b".b\r\n"]) == SHAPE_KNOWN | SHAPE_CRLF
    assert body_shape([b"a\nb\r\n"]) & SHAPE_CRLF == 0
    assert body_shape([b"a\r\nlast"]) & SHAPE_CRLF == 0  # POP3 adds the last line's end
    assert body_shape([b"a\r\n\r"]) & SHAPE_CRLF == 0


@given(messages(), st.lists(st.integers(min_value=0, max_value=8), max_size=10))
def test_shape_does_not_depend_on_the_pieces(message: bytes, chunks: list[int]) -> None:
    assert body_shape(pieces(message, chunks)) == body_shape([message])


@given(messages(), st.lists(st.integers(min_value=0, max_value=8), max_size=10), st.sampled_from([None, 0, 1, 3]))
def test_recorded_shape_gives_the_same_octets(message: bytes, chunks: list[int], n: int | None) -> None:
    """The shortcuts a recorded shape allows send what the general path sends."""
    assert encode(message, chunks, n, shape=body_shape([message])) == encode(message, body_lines=n)
