"""Unit tests of the DATA decoder (maild.smtp.data): end marker, unstuffing, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.smtp import data
from maild.smtp.data import DataReader, Problem, check_content


def feed_all(chunks: list[bytes], max_size: int = 10_000, max_line: int = 1000) -> tuple[DataReader, bool, bytes]:
    reader = DataReader(max_size, max_line)
    buf = bytearray()
    done = False
    for chunk in chunks:
        buf += chunk
        if reader.feed(buf):
            done = True
            break
    return reader, done, bytes(buf)


def test_simple_message_and_rest() -> None:
    reader, done, rest = feed_all([b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
    assert done and rest == b"QUIT\r\n"
    assert reader.message() == b"Subject: x\r\n\r\nbody\r\n"
    assert reader.problem is None


def test_empty_message() -> None:
    reader, done, rest = feed_all([b".\r\n"])
    assert done and reader.message() == b"" and rest == b""


def test_unstuffing_at_every_position() -> None:
    reader, done, _ = feed_all([b"..a\r\n", b"..", b"b\r\n.", b".c\r\n.\r\n"])
    assert done and reader.message() == b".a\r\n.b\r\n.c\r\n"


@pytest.mark.parametrize("payload", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r\r\n",
                                     b"\r\n\x00.\r\n"])
def test_bare_endings_never_end_data(payload: bytes) -> None:
    reader, done, _ = feed_all([b"a" + payload + b"MAIL FROM:<x@y>\r\n"])
    assert not done
    reader, done, rest = feed_all([b"a" + payload + b"MAIL FROM:<x@y>\r\n.\r\nNOOP\r\n"])
    assert done and rest == b"NOOP\r\n"
    assert reader.problem is Problem.BARE_NEWLINE and reader.message() == b""


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=30))
def test_marker_found_across_any_split(cuts: list[int]) -> None:
    data = b"Subject: s\r\n\r\n..x\r\n" + b"y" * 30 + b"\r\n.\r\nRSET\r\n"
    reader, buf, at, done = DataReader(10_000, 1000), bytearray(), 0, False
    for cut in [*cuts, len(data)]:
        buf += data[at:at + cut]
        at += cut
        if reader.feed(buf):
            done = True
            break
    assert done
    assert reader.message() == b"Subject: s\r\n\r\n.x\r\n" + b"y" * 30 + b"\r\n"
    assert bytes(buf) + data[at:] == b"RSET\r\n" and reader.problem is None


def test_long_line_is_discarded_with_bounded_buffer() -> None:
    reader = DataReader(1_000_000, 1000)
    buf = bytearray(b"start\r\n")
    for _ in range(100):
        buf += b"x" * 1000
        assert not reader.feed(buf)
        assert len(buf) <= 1001
    buf += b"\r\n.\r\nNOOP\r\n"
    assert reader.feed(buf)
    assert reader.problem is Problem.LINE_TOO_LONG
    assert bytes(buf) == b"NOOP\r\n"


def test_dot_after_long_line_tail_is_not_the_end() -> None:
    reader = DataReader(1_000_000, 1000)
    buf = bytearray(b"x" * 2000)
    assert not reader.feed(buf)
    buf += b".\r\nstill data\r\n.\r\n"  # ".\r\n" continues the long line, not a new line
    assert reader.feed(buf) and bytes(buf) == b""
    assert reader.problem is Problem.LINE_TOO_LONG


@pytest.mark.parametrize("cut", [1, 700, 1500, 5000])
def test_bare_lf_lines_longer_together_than_a_line_are_bare_lf(cut: int) -> None:
    """A Unix-ending message: no CRLF for thousands of octets. What is wrong is the bare
    LF, not the length of a "line" that runs to the next CRLF."""
    text = b"Subject: unix\n\n" + b"".join(b"line %d of a message with LF endings\n" % i
                                           for i in range(200))
    chunks = [text[i:i + cut] for i in range(0, len(text), cut)] + [b"\r\n.\r\nQUIT\r\n"]
    reader, done, rest = feed_all(chunks)
    assert done and rest == b"QUIT\r\n"
    assert reader.problem is Problem.BARE_NEWLINE


def test_too_big_keeps_reading() -> None:
    reader, done, rest = feed_all([b"x" * 70 + b"\r\n"] * 100 + [b".\r\nQUIT\r\n"], max_size=1000)
    assert done and rest == b"QUIT\r\n"
    assert reader.problem is Problem.TOO_BIG and reader.message() == b""


def test_check_content() -> None:
    assert check_content(b"a\r\nb\r\n", 1000) is None
    assert check_content(b"a\nb\r\n", 1000) is Problem.BARE_NEWLINE
    assert check_content(b"a" * 998 + b"\r\n", 1000) is None
    assert check_content(b"a" * 999 + b"\r\n", 1000) is Problem.LINE_TOO_LONG


@given(st.lists(st.sampled_from([b"a", b"bb", b"\r\n", b"x" * 7]), max_size=80))
def test_check_content_in_windows_is_the_whole_check(pieces: list[bytes]) -> None:
    """check_content looks at the message a window at a time (cut at a line end): the
    answer is the one a single split of the whole message gives, wherever the cuts fall."""
    content = b"".join(pieces)
    whole = (Problem.LINE_TOO_LONG if content and max(map(len, content.split(b"\r\n"))) > 10 - 2
             else None)
    saved = data._CHECK_WINDOW
    data._CHECK_WINDOW = 5
    try:
        assert check_content(content, 10) == whole
    finally:
        data._CHECK_WINDOW = saved


@given(st.binary(max_size=200) | st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"\x00", b" "]),
                                          max_size=60).map(b"".join))
def test_has_bare_is_the_bare_ending_definition(payload: bytes) -> None:
    """RFC 5321 §2.3.8: a CR not followed by LF, an LF not preceded by CR, or a NUL; on a
    prefix too (the decoder asks about a bytearray up to a kept trailing CR)."""
    assert data.has_bare(payload) == (data._BARE.search(payload) is not None)
    for end in range(len(payload) + 1):
        assert data.has_bare(bytearray(payload), end) == (data._BARE.search(payload, 0, end) is not None), end
