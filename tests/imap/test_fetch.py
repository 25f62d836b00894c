"""FETCH (RFC 3501 §6.4.5): every data item, sections, partials, \\Seen, streaming."""

from __future__ import annotations

import hashlib
import re

from tests.imap.conftest import Transcript, append, message
from tests.imap.test_mime import RAW


def test_fetch_items(imap: Transcript) -> None:
    append(imap, "INBOX", RAW)
    imap.ok("SELECT INBOX")
    line = imap.ok("FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")[0]
    # This session is the first to see the message: \Recent (RFC 3501 §2.3.2).
    assert line.startswith(b"* 1 FETCH (UID 1 FLAGS (\\Recent) INTERNALDATE \"")
    assert b'ENVELOPE (NIL "=?utf-8?b?R3LDvMOfZQ==?=" (("=?utf-8?q?J=C3=B6rg?=" NIL "joerg" "example.org"))' in line
    assert b'((NIL NIL "a" "example.test")("B, Bee" NIL "b" "example.test"))' in line
    all_macro = imap.ok("FETCH 1 ALL")[0]
    assert b"ENVELOPE" in all_macro and b"RFC822.SIZE" in all_macro and b"BODY" not in all_macro
    full = imap.ok("FETCH 1 FULL")[0]
    assert b' BODY (("TEXT" "PLAIN"' in full
    structure = imap.ok("FETCH 1 BODYSTRUCTURE")[0]
    assert b'"MIXED" ("BOUNDARY" "XX") NIL NIL NIL))' in structure
    sections = imap.ok("FETCH 1 (BODY.PEEK[1] BODY.PEEK[2.2] BODY.PEEK[2.HEADER.FIELDS (SUBJECT)]"
                       " BODY.PEEK[1.MIME] BODY.PEEK[9])")[0]
    assert b"BODY[1] {20}\r\nGr=FC=DFe aus K=F6ln" in sections
    assert b"BODY[2.2] {11}\r\n<p>html</p>" in sections
    assert b"BODY[2.HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: inner\r\n\r\n" in sections
    assert b"BODY[9] {0}\r\n" in sections
    assert b"FLAGS" not in sections  # PEEK leaves \Seen alone
    partial = imap.ok("FETCH 1 (BODY.PEEK[]<6.4> BODY.PEEK[TEXT]<0.8> BODY.PEEK[]<99999.10>)")[0]
    assert b"BODY[]<6> {4}\r\n=?ut" in partial and b"BODY[TEXT]<0> {8}\r\npreamble" in partial
    assert b"BODY[]<99999> {0}\r\n" in partial
    rfc822 = imap.ok("FETCH 1 (RFC822.HEADER)")[0]
    assert rfc822.endswith(b'boundary="XX"\r\n\r\n)')
    assert imap.ok("FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))"]
    seen = imap.ok("FETCH 1 BODY[TEXT]")[0]
    assert seen.endswith(b" FLAGS (\\Recent \\Seen))")  # RFC 3501: the \Seen set by the fetch is reported
    assert imap.ok("UID FETCH 1 RFC822.TEXT")[0].startswith(b"* 1 FETCH (RFC822.TEXT {")


def test_fetch_sequence_errors(imap: Transcript) -> None:
    imap.ok("SELECT INBOX")
    imap.bad("FETCH 1 FLAGS")  # no messages
    assert imap.ok("UID FETCH 1:* FLAGS") == []
    append(imap, "INBOX", message())
    imap.bad("FETCH 2 FLAGS")
    imap.bad("FETCH 1 (FLAGS")
    # RFC 3501 §6.4.8; appended while selected, so this session's \Recent (§6.3.11).
    assert imap.ok("UID FETCH 5:* FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent) UID 1)"]


def test_large_body_streams_intact(imap: Transcript) -> None:
    body = b"".join(b"line %07d of a big message\r\n" % i for i in range(100_000))  # ~3 MB
    raw = b"Subject: big\r\n\r\n" + body
    append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    line = imap.ok("FETCH 1 (UID BODY.PEEK[])")[0]
    match = re.match(rb"\* 1 FETCH \(UID 1 BODY\[\] \{(\d+)\}\r\n", line)
    assert match and int(match.group(1)) == len(raw)
    data = line[match.end():-1]
    assert hashlib.sha256(data).digest() == hashlib.sha256(raw).digest()
    middle = imap.ok("FETCH 1 BODY.PEEK[]<1000000.30>")[0]
    assert middle.endswith(raw[1000000:1000030] + b")")


def test_flag_resync_lines(imap: Transcript) -> None:
    """FETCH 1:* (UID FLAGS) and UID FETCH 1:* (FLAGS) take a shortcut; their lines are
    those of the item-by-item path (here with RFC822.SIZE taken out again)."""
    for flags in ("", "\\Seen", "\\Seen \\Flagged $Label1", "\\Deleted \\Draft \\Answered"):
        append(imap, "INBOX", message(f"m {flags}"), flags)
    imap.ok("SELECT INBOX")
    for fast, slow in (("FETCH 1:* (UID FLAGS)", "FETCH 1:* (UID FLAGS RFC822.SIZE)"),
                       ("UID FETCH 1:* (FLAGS)", "UID FETCH 1:* (FLAGS UID RFC822.SIZE)")):
        expected = [re.sub(rb" RFC822\.SIZE \d+", b"", line) for line in imap.ok(slow)]
        assert imap.ok(fast) == expected
        assert len(expected) == 4 and b"$Label1" in expected[2]


def test_fetch_envelope_group_syntax_and_routes(imap: Transcript) -> None:
    """RFC 3501 §7.4.2: group start and end markers, the source route as adl, comments in no
    field, an empty group as its two markers."""
    raw = (b"From: <@route.example:user@domain.example>\r\nTo: group: a@x.example, b@y.example;, "
           b"other: c@z.example;\r\nCc: undisclosed-recipients:;\r\nBcc: <u (c)@ (c) domain.org>\r\n"
           b"Subject: groups\r\n\r\nbody\r\n")
    append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    line = imap.ok("FETCH 1 ENVELOPE")[0]
    assert line == (b'* 1 FETCH (ENVELOPE (NIL "groups" ((NIL "@route.example" "user" "domain.example"))'
                    b' ((NIL "@route.example" "user" "domain.example"))'
                    b' ((NIL "@route.example" "user" "domain.example"))'
                    b' ((NIL NIL "group" NIL)(NIL NIL "a" "x.example")(NIL NIL "b" "y.example")(NIL NIL NIL NIL)'
                    b'(NIL NIL "other" NIL)(NIL NIL "c" "z.example")(NIL NIL NIL NIL))'
                    b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))'
                    b' ((NIL NIL "u" "domain.org")) NIL NIL))')


def test_header_of_same_uid_in_another_mailbox(imap: Transcript) -> None:
    """The octets one FETCH read (kept by UID for that FETCH only) never answer the next
    FETCH: a message with the same UID in another mailbox has its own header."""
    append(imap, "INBOX", message("in the inbox"))
    append(imap, "Archive", message("archived"))
    imap.ok("SELECT INBOX")
    assert b"in the inbox" in imap.ok("UID FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (Subject)])")[0]
    imap.ok("SELECT Archive")
    assert b"archived" in imap.ok("UID FETCH 1 (UID BODY.PEEK[HEADER.FIELDS (Subject)])")[0]
