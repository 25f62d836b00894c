"""maild.util.mime: the one MIME walker (RFC 2046), held to the RFC's rules on small
messages and to "no recursion" on hostile ones."""

from __future__ import annotations

import sys

from maild.util.mime import LEAF, MAX_DEPTH, MESSAGE, MULTIPART, split_params, walk

NESTED = (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n"
          b"preamble\r\n"
          b"--outer\r\nContent-Type: text/plain\r\n\r\none\r\n"
          b"--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
          b"--inner\r\n\r\nimplicit text/plain\r\n"
          b"--inner\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n"
          # no close delimiter for "inner": the outer delimiter ends it (RFC 2046 §5.1.2)
          b"--outer   \r\nContent-Type: message/rfc822\r\n\r\nSubject: inside\r\n\r\nthree\r\n"
          b"--outer--\r\nepilogue\r\n")


def test_parts_offsets_and_kinds() -> None:
    s = walk(NESTED)
    shape = [(p.depth, p.parent, p.kind, f"{p.type}/{p.subtype}", p.body) for p in s.parts]
    assert shape == [
        (0, -1, MULTIPART, "multipart/mixed", NESTED[NESTED.index(b"preamble"):]),
        (1, 0, LEAF, "text/plain", b"one"),
        (1, 0, MULTIPART, "multipart/alternative",
         b"--inner\r\n\r\nimplicit text/plain\r\n--inner\r\nContent-Type: text/html\r\n\r\n"
         b"<p>two</p>"),
        (2, 2, LEAF, "text/plain", b"implicit text/plain"),
        (2, 2, LEAF, "text/html", b"<p>two</p>"),
        (1, 0, MESSAGE, "message/rfc822", b"Subject: inside\r\n\r\nthree"),
        (2, 5, LEAF, "text/plain", b"three"),
    ]
    assert not s.too_deep and not s.too_many


def test_digest_parts_default_to_messages() -> None:
    raw = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nx\r\n"
           b"--d--\r\n")
    kinds = [(p.kind, p.type, p.subtype) for p in walk(raw).parts]
    assert kinds == [(MULTIPART, "multipart", "digest"), (MESSAGE, "message", "rfc822"),
                     (LEAF, "text", "plain")]


def test_nesting_beyond_the_limit_uses_no_stack() -> None:
    inner = b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    for i in range(5000):
        inner = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                 + inner + b"\r\n--b%d--\r\n" % i)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)  # a recursive walker would overflow here
    try:
        s = walk(inner)
    finally:
        sys.setrecursionlimit(limit)
    assert s.too_deep
    assert s.depth == MAX_DEPTH and s.parts[-1].opaque


def test_rfc2231_and_duplicate_parameters() -> None:
    main, params = split_params('attachment; filename="a b.txt"; filename*0*=utf-8\'\'%C3%A9;'
                                ' filename*1="x.exe"; NAME=plain; junk; q="a\\"b"')
    assert main == "attachment"
    assert params == [("filename", "a b.txt"), ("name", "plain"), ("q", 'a"b'),
                      ("filename", "\u00e9x.exe")]
