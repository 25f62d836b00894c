"""maild.util.message: the header split and field list every protocol builds on, held to
their plain definitions on random octets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from maild.util.message import header_fields, split_header

# The definitions (RFC 5322 §2.1, §2.2): the header ends at the first empty line, the first
# match of this pattern; a field is a line starting ``ftext *WSP ":"`` and the lines after
# it starting with WSP, unfolded by removing the line break before the WSP; other lines
# are not fields, nor are WSP lines after them.
BLANK_LINE = re.compile(rb"\A\r?\n|\n\r?\n")
FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")
FOLD = re.compile(r"\r?\n(?=[ \t])")
octets = st.lists(st.sampled_from([b"a", b"B:", b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b"\xff"]),
                  max_size=40).map(b"".join)


@settings(max_examples=3000, deadline=None)
@given(octets)
def test_split_header_ends_at_the_first_blank_line(raw: bytes) -> None:
    match = BLANK_LINE.search(raw)
    expected = (raw, b"") if match is None else (raw[:match.end()], raw[match.end():])
    assert split_header(raw) == expected


@settings(max_examples=2000, deadline=None)
@given(octets)
def test_header_fields_unfold_like_the_pattern(raw: bytes) -> None:
    head, _ = split_header(raw)
    fields: list[list[bytes]] = []
    open_field = False
    for line in re.split(rb"(?<=\n)", head):
        if line in (b"", b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and open_field:
            fields[-1][1] += line
            continue
        match = FIELD.match(line)
        open_field = match is not None
        if match:
            fields.append([match.group(1), line[match.end():]])
    expected = [(n.decode(), FOLD.sub("", v.decode("utf-8", "surrogateescape")).strip())
                for n, v in fields]
    assert header_fields(raw) == expected


def test_common_shapes() -> None:
    assert split_header(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == (b"A: 1\r\nB: 2\r\n\r\n", b"body\r\n")
    assert split_header(b"A: 1\n\nbody") == (b"A: 1\n\n", b"body")
    assert split_header(b"A: 1\r\n") == (b"A: 1\r\n", b"")
    assert header_fields(b"Subject: a\r\n b\r\nTo: c\r\n") == [("Subject", "a b"), ("To", "c")]
    assert header_fields(b"Subject: a\r\n\tb\r\n") == [("Subject", "a\tb")]  # §2.2.3
    assert split_header(b"\r\nA: 1\r\n\r\n") == (b"\r\n", b"A: 1\r\n\r\n")  # no fields
    assert header_fields(b"Subject : obs\r\nX-Bogus line\r\nFrom: a@b\r\n") == [
        ("Subject", "obs"), ("From", "a@b")]
