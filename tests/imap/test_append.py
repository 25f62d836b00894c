"""APPEND (RFC 3501 §6.3.11) with UIDPLUS APPENDUID (RFC 4315), LITERAL+ (RFC 7888),
APPENDLIMIT (RFC 7889) and quota (RFC 9208)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tests.imap.conftest import Transcript, append, message


def test_append_with_flags_and_date(imap: Transcript) -> None:
    raw = message("dated")
    command = f'APPEND Drafts (\\Draft $Label) "05-Feb-2024 21:52:25 +0100" {{{len(raw)}+}}\r\n'
    untagged, result = imap.command(command.encode() + raw)
    assert result.startswith(b"OK [APPENDUID ") and result.split(b"]")[0].endswith(b" 1")
    imap.ok("SELECT Drafts")
    line = imap.ok("FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")[0]
    assert b"FLAGS ($Label \\Draft \\Recent)" in line  # \Recent for the next session (RFC 3501 §6.3.11)
    assert b'INTERNALDATE "05-Feb-2024 20:52:25 +0000"' in line
    assert b"RFC822.SIZE %d" % len(raw) in line and line.endswith(raw + b")")


def test_synchronizing_literal_and_selected_mailbox(imap: Transcript) -> None:
    imap.ok("SELECT INBOX")
    raw = message("sync")
    imap.send(f"a1 APPEND INBOX {{{len(raw)}}}")
    assert imap.line().startswith(b"+ ")
    imap.send(raw)
    untagged, result = imap.collect("a1")
    assert b"* 1 EXISTS" in untagged  # the new message is announced in this response
    assert result.startswith(b"OK [APPENDUID")


def test_append_errors(imap: Transcript) -> None:
    raw = message()
    imap.no(f"APPEND Nope {{{len(raw)}+}}\r\n".encode() + raw, code="TRYCREATE")
    imap.bad("APPEND INBOX hello")
    imap.bad(f"APPEND INBOX (\\Recent) {{{len(raw)}+}}\r\n".encode() + raw)


def test_appendlimit_refused_before_reading(maild_factory: Callable[..., Any]) -> None:
    server = maild_factory(imap={"append_limit": 1000, "allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    s.login("alice@example.test", "alice-secret")
    assert b"APPENDLIMIT=1000" in s.ok("CAPABILITY")[0]
    s.send("a APPEND INBOX {1001}")
    assert s.line() == b"a NO [TOOBIG] message larger than APPENDLIMIT"
    s.ok("NOOP")  # the session goes on: nothing was read
    append(s, "INBOX", b"x" * 1000)
    s.send("b APPEND INBOX {5000000+}")  # non-synchronizing: refused, then the connection closes
    assert s.line() == b"b NO [TOOBIG] message larger than APPENDLIMIT"
    assert s.line().startswith(b"* BYE")
    assert s.closed()


def test_quota_exceeded(maild_factory: Callable[..., Any]) -> None:
    server = maild_factory(store={"default_quota_mb": 1}, imap={"allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    s.login("alice@example.test", "alice-secret")
    big = b"Subject: big\r\n\r\n" + b"x" * 600_000 + b"\r\n"
    append(s, "INBOX", big)
    s.no(f"APPEND INBOX {{{len(big)}+}}\r\n".encode() + big, code="OVERQUOTA")
    lines = s.ok("GETQUOTAROOT INBOX")
    assert lines[0] == b'* QUOTAROOT INBOX ""'
    assert lines[1].startswith(b'* QUOTA "" (STORAGE 5') and lines[1].endswith(b" 1024)")
    assert s.ok('GETQUOTA ""') == lines[1:]
    s.no('SETQUOTA "" (STORAGE 10)', code="NOPERM")
