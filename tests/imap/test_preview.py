"""PREVIEW (RFC 8970): FETCH PREVIEW and PREVIEW (LAZY) answer at most 256 characters of
the message's text (§3.1), from text/plain, else text/html without markup; never \\Seen."""

from __future__ import annotations

import base64

from tests.imap.conftest import Transcript, append, message


def _preview(imap: Transcript, seq: int, item: str = "PREVIEW") -> bytes:
    line = imap.ok(f"FETCH {seq} ({item})")[0]
    prefix = b"* %d FETCH (PREVIEW " % seq
    assert line.startswith(prefix) and line.endswith(b")"), line
    value = line[len(prefix):-1]
    if value.startswith(b'"'):
        return value[1:-1]
    size, _, data = value.partition(b"}\r\n")  # a literal: non-ASCII text
    assert int(size[1:]) == len(data)
    return data


def test_preview(imap: Transcript) -> None:
    assert b"PREVIEW" in imap.ok("CAPABILITY")[0].split()
    plain = message("plain", body="Hi Alice,\r\n\r\n  the   meeting moved\r\nto Tuesday.\r\n> quoted old text\r\n")
    long = message("long", body="word " * 200)
    html_only = (b"Subject: html\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                 b"<html><head><style>p {color: red}</style></head><body><p>Caf&eacute; <b>opens</b>"
                 b"</p><p>at 9</p></body></html>\r\n")
    alternative = (b"Subject: alt\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
                   b"--B\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: attachment\r\n\r\n"
                   b"attached notes\r\n"
                   b"--B\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                   + base64.b64encode("Grüße aus Köln".encode("latin-1")) + b"\r\n--B--\r\n")
    no_text = (b"Subject: pic\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               b"iVBORw0KGgo=\r\n")
    for raw in (plain, long, html_only, alternative, no_text):
        append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    assert _preview(imap, 1) == b"Hi Alice, the meeting moved to Tuesday."
    text = _preview(imap, 2)
    assert len(text) == 256 and text.startswith(b"word word")  # §3.1: at most 256 characters
    assert _preview(imap, 3) == "Café opens at 9".encode()
    assert _preview(imap, 4) == "Grüße aus Köln".encode()  # the attachment is passed over
    assert _preview(imap, 5) == b""
    # PREVIEW (LAZY) (§3.2), beside other items; the modifier is not echoed.
    line = imap.ok("FETCH 1 (UID PREVIEW (LAZY) FLAGS)")[0]
    # \Recent: this session's SELECT was the first to see them (RFC 3501 §2.3.2).
    assert line == b'* 1 FETCH (UID 1 PREVIEW "Hi Alice, the meeting moved to Tuesday." FLAGS (\\Recent))'
    assert imap.ok("FETCH 1:5 (FLAGS)") == [b"* %d FETCH (FLAGS (\\Recent))" % i for i in range(1, 6)]  # no \Seen
    imap.bad("FETCH 1 (PREVIEW (EAGER))")
    imap.bad("FETCH 1 (PREVIEW ())")
    # A FETCH modifier after a lone PREVIEW is not taken for a preview modifier.
    # (CHANGEDSINCE enables CONDSTORE here: HIGHESTMODSEQ first, RFC 7162 §3.1.)
    lines = imap.ok("FETCH 1 PREVIEW (CHANGEDSINCE 1)")
    assert lines[0].startswith(b"* OK [HIGHESTMODSEQ ") and lines[1].startswith(b"* 1 FETCH (PREVIEW ")
