"""maild.util.message: the header split and field list every protocol builds on, held to
their plain definitions on random octets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from maild.imap import mime
from maild.imap.commands import Section
from maild.util import address
from maild.util.message import (
    author_problem,
    envelope_fields,
    from_domain,
    header_fields,
    parse_header,
    split_header,
)

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


# -- issue 16: the From DMARC judges is the From the user is shown ---------------------------

_ADDRESSES = st.sampled_from([
    "ceo@spoofed.example", "Boss <ceo@spoofed.example>", '"Boss, CEO" <ceo@Spoofed.Example>',
    "a@remote.example", "<a@remote.example.>", "A (comment) <a@remote.example>",
    "=?utf-8?q?Bo=C3=9F?= <ceo@spoofed.example>", "undisclosed:;", "grp: a@remote.example;",
    "no-at-sign", "a@remote.example, b@remote.example", "a@remote.example, ceo@spoofed.example",
    '"a@remote.example" <ceo@spoofed.example>', "ceo@spoofed.example <a@remote.example>",
    "a@remote.example\r\n <ceo@spoofed.example>", "\r\n ceo@spoofed.example",
])
_LINES = st.one_of(
    _ADDRESSES.map(lambda a: "From: " + a),
    _ADDRESSES.map(lambda a: "FROM :" + a),
    _ADDRESSES.map(lambda a: "Sender: " + a),
    _ADDRESSES.map(lambda a: "Reply-To: " + a),
    st.sampled_from(["Subject: x", "X-Bogus line without colon", " folded continuation",
                     "\tanother", "From", "From ceo@spoofed.example", ": no name",
                     "X-Header:", "To: bob@example.test", "Subject: a\r\n b"]),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_LINES, max_size=8), st.sampled_from(["\r\n", "\n"]))
def test_dmarc_judges_the_from_the_envelope_shows(lines: list[str], eol: str) -> None:
    raw = (eol.join(lines) + eol + eol + "body" + eol).encode()
    header = parse_header(raw)
    if author_problem(header) is not None:
        return  # refused at end of DATA (554 5.6.0): never stored, never judged
    judged = from_domain(header)  # what mail authentication hands to DMARC
    assert judged is not None
    shown = envelope_fields(raw)["from_"]  # what the store keeps and IMAP ENVELOPE shows
    assert header.get_all("from") == [shown]
    domains = {(a.host or "").lower().rstrip(".") for a in address.parse(shown)
               if not (a.is_group_start or a.is_group_end)}
    assert domains == {judged}
    # BODY[HEADER.FIELDS (FROM)] hands a mail client the very field DMARC read.
    fetched = mime.section(raw, Section(text="HEADER.FIELDS", fields=("FROM",)))
    assert fetched is not None
    assert header_fields(fetched) == [(f.name, f.value) for f in header.fields if f.lname == "from"]
