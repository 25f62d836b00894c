"""maild.util.message: the header split and field list every protocol builds on, held to
their plain definitions on random octets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from maild.util.message import header_fields, split_header

# The definition: the header ends at the first match of this pattern.
BLANK_LINE = re.compile(rb"\r?\n\r?\n")
FOLD = re.compile(r"\r?\n[ \t]")
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
    lines = FOLD.sub(" ", raw.decode("utf-8", "surrogateescape")).splitlines()
    fields = [line.partition(":") for line in lines if line and line[0] not in " \t" and ":" in line]
    assert header_fields(raw) == [(name.strip(), value.strip()) for name, _, value in fields]


def test_common_shapes() -> None:
    assert split_header(b"A: 1\r\nB: 2\r\n\r\nbody\r\n") == (b"A: 1\r\nB: 2\r\n\r\n", b"body\r\n")
    assert split_header(b"A: 1\n\nbody") == (b"A: 1\n\n", b"body")
    assert split_header(b"A: 1\r\n") == (b"A: 1\r\n", b"")
    assert header_fields(b"Subject: a\r\n b\r\nTo: c\r\n") == [("Subject", "a b"), ("To", "c")]
