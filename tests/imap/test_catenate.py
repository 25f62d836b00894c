"""CATENATE (RFC 4469): APPEND a message built from TEXT literals and IMAP URLs (RFC 5092)
of messages and sections already stored; NO [BADURL] and NO [TOOBIG] append nothing (§5)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tests.imap.conftest import Account, Transcript, append, message

ORIGINAL = (b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: report\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
            b"--B\r\nContent-Type: text/plain\r\n\r\nThe text part.\r\n"
            b"--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
            b"--B--\r\n")


def _uidvalidity(imap: Transcript, mailbox: str) -> int:
    line = imap.ok(f"STATUS {mailbox} (UIDVALIDITY)")[0]
    return int(line.split(b"UIDVALIDITY ")[1].rstrip(b")"))


def _body(imap: Transcript, mailbox: str, uid: int) -> bytes:
    imap.ok(f"EXAMINE {mailbox}")
    line = imap.ok(f"UID FETCH {uid} (BODY.PEEK[])")[0]
    return line.split(b"}\r\n", 1)[1].rsplit(b" UID", 1)[0].rstrip(b")") if b"}\r\n" in line else b""


def _messages(imap: Transcript, mailbox: str) -> int:
    return int(imap.ok(f"STATUS {mailbox} (MESSAGES)")[0].split(b"MESSAGES ")[1].rstrip(b")"))


def test_catenate_text_and_urls(imap: Transcript, account: Account) -> None:
    assert b"CATENATE" in imap.ok("CAPABILITY")[0].split()
    append(imap, "INBOX", ORIGINAL)
    validity = _uidvalidity(imap, "INBOX")
    header = b"From: alice@example.test\r\nTo: carol@example.test\r\nSubject: Fwd: report\r\n"
    mime = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n"
    forward = b"\r\n--Z\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    end = b"\r\n--Z--\r\n"
    user = account.address.replace("@", "%40")
    command = (b"APPEND Drafts (\\Draft) CATENATE (TEXT {%d+}\r\n" % len(header + mime) + header + mime
               + b' URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=1.MIME"' % validity
               + b' URL "/INBOX/;UID=1/;SECTION=1"'
               + b" TEXT {%d+}\r\n" % len(forward) + forward
               + f' URL "imap://{user}@localhost/INBOX/;UID=1/;SECTION=2"'.encode()
               + b" TEXT {%d+}\r\n" % len(end) + end + b")")
    untagged, result = imap.command(command)
    assert result.startswith(b"OK [APPENDUID ") and result.split(b"]")[0].endswith(b" 1"), result
    built = (header + mime + b"Content-Type: text/plain\r\n\r\n" + b"The text part." + forward
             + b"JVBERi0xLjQK" + end)
    assert _body(imap, "Drafts", 1) == built
    imap.ok("UNSELECT")
    # A whole message, a part of it with PARTIAL, and text, in a MULTIAPPEND with a plain message.
    plain = message("plain one")
    command = (b'APPEND Archive CATENATE (URL "/INBOX/;UID=1" TEXT {2+}\r\n\r\n)'
               + b" CATENATE (TEXT {9+}\r\nSubject: "
               + b' URL "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT)/;PARTIAL=9.6")'
               + b" {%d+}\r\n" % len(plain) + plain)
    untagged, result = imap.command(command)
    assert result.startswith(b"OK [APPENDUID ") and result.split(b"]")[0].endswith(b" 1:3"), result
    assert _body(imap, "Archive", 1) == ORIGINAL + b"\r\n"
    assert _body(imap, "Archive", 2) == b"Subject: report"
    assert _body(imap, "Archive", 3) == plain


def test_bad_urls_append_nothing(imap: Transcript) -> None:
    append(imap, "INBOX", ORIGINAL)
    imap.ok("CREATE K&APw-che")  # "Küche"
    append(imap, "K&APw-che", message("in the kitchen"))
    validity = _uidvalidity(imap, "INBOX")
    ok = b"APPEND Drafts CATENATE (URL \"/K%C3%BCche/;UID=1\")"
    assert imap.command(ok)[1].startswith(b"OK [APPENDUID ")  # a UTF-8 name, percent-encoded
    for url in (f"/INBOX;UIDVALIDITY={validity + 1}/;UID=1",  # UIDVALIDITY changed
                "/INBOX/;UID=2",  # no such message
                "/Nowhere/;UID=1",  # no such mailbox
                "imap://bob%40example.test@localhost/INBOX/;UID=1",  # another user's
                "/INBOX/;UID=1/;SECTION=1.FOO",  # not a section
                "http://example.test/x", "INBOX/;UID=1", "/INBOX/;UID=0"):
        command = (b"APPEND Drafts CATENATE (TEXT {4+}\r\nx: y" + f' URL "{url}")'.encode()
                   + b" {5+}\r\nhello")  # and a good second message: not appended either
        untagged, result = imap.command(command)
        assert result.startswith(f'NO [BADURL "{url}"]'.encode()), (url, result)
    assert _messages(imap, "Drafts") == 1
    imap.bad('APPEND Drafts CATENATE ()')
    imap.bad('APPEND Drafts CATENATE (BODY "x")')
    imap.no('APPEND Drafts CATENATE (URL "/INBOX/;UID=1/;SECTION=9")')  # empty: nothing to append


def test_too_big(maild_factory: Callable[..., Any]) -> None:
    server = maild_factory(imap={"append_limit": 1000, "allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    s.login("alice@example.test", "alice-secret")
    raw = b"Subject: s\r\n\r\n" + b"z" * 600 + b"\r\n"
    append(s, "INBOX", raw)
    s.no('APPEND INBOX CATENATE (URL "/INBOX/;UID=1" URL "/INBOX/;UID=1")', code="TOOBIG")
    assert _messages(s, "INBOX") == 1
