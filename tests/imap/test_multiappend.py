"""MULTIAPPEND (RFC 3502): one APPEND uploads several messages, all or none, with
APPENDUID's uid-set (RFC 3502 "Interaction with UIDPLUS", RFC 4315 §3)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tests.imap.conftest import Transcript, append, message


def _messages(imap: Transcript, mailbox: str) -> int:
    line = imap.ok(f"STATUS {mailbox} (MESSAGES)")[0]
    return int(line.split(b"MESSAGES ")[1].rstrip(b")"))


def test_advertised(imap: Transcript) -> None:
    assert b"MULTIAPPEND" in imap.ok("CAPABILITY")[0].split()


def test_three_messages_in_one_command(imap: Transcript) -> None:
    imap.ok("SELECT INBOX")
    one, two, three = message("one"), message("two"), message("three")
    command = (f"APPEND INBOX {{{len(one)}+}}\r\n".encode() + one
               + f' (\\Flagged $Work) "05-Feb-2024 21:52:25 +0100" {{{len(two)}+}}\r\n'.encode() + two
               + f" (\\Seen) {{{len(three)}+}}\r\n".encode() + three)
    untagged, result = imap.command(command)
    assert result.startswith(b"OK [APPENDUID "), result
    uidvalidity, uids = result.split(b"]")[0].split()[2:]
    assert uids == b"1:3" and int(uidvalidity) > 0
    # RFC 3501 §6.3.11: the selected mailbox's new messages announced, all three \Recent
    # for this session (appended where it is selected, RFC 3501 §2.3.2).
    assert untagged == [b"* 3 EXISTS", b"* 3 RECENT"]
    lines = imap.ok("FETCH 1:3 (UID FLAGS INTERNALDATE BODY.PEEK[])")
    # $Work is new to the session: FLAGS and PERMANENTFLAGS name it first (RFC 3501 §7.2.6).
    flags = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work"
    assert lines[:2] == [b"* FLAGS " + flags + b")", b"* OK [PERMANENTFLAGS " + flags + b" \\*)] Flags permitted"]
    lines = lines[2:]
    assert [line.split(b" ")[1] for line in lines] == [b"1", b"2", b"3"]
    assert b"FLAGS (\\Recent)" in lines[0] and lines[0].endswith(one + b")")
    assert b"FLAGS ($Work \\Flagged \\Recent)" in lines[1]
    assert b'INTERNALDATE "05-Feb-2024 20:52:25 +0000"' in lines[1] and lines[1].endswith(two + b")")
    assert b"FLAGS (\\Recent \\Seen)" in lines[2] and lines[2].endswith(three + b")")
    # The next APPEND's uids follow on.
    assert append(imap, "INBOX", message("four")) == 4


def test_synchronizing_literals(imap: Transcript) -> None:
    one, two = message("sync one"), message("sync two")
    imap.send(f"a1 APPEND Drafts (\\Draft) {{{len(one)}}}")
    assert imap.line().startswith(b"+ ")
    imap.send(one + f" (\\Draft) {{{len(two)}}}".encode())
    assert imap.line().startswith(b"+ ")  # a continuation for each message (RFC 3502 example)
    imap.send(two)
    untagged, result = imap.collect("a1")
    assert result.startswith(b"OK [APPENDUID ") and result.split(b"]")[0].endswith(b" 1:2")
    assert _messages(imap, "Drafts") == 2


def test_zero_length_literal_cancels_everything(imap: Transcript) -> None:
    one = message("kept?")
    # RFC 3502 §6.3.11: a zero-length message literal is an error answered NO; no partial
    # appending is permitted.
    imap.no(f"APPEND INBOX {{{len(one)}+}}\r\n".encode() + one + b" {0+}\r\n")
    imap.send(f"a2 APPEND INBOX {{{len(one)}}}")
    assert imap.line().startswith(b"+ ")
    imap.send(one + b" {0}")
    assert imap.line().startswith(b"+ ")
    imap.send(b"")
    assert imap.collect("a2")[1].startswith(b"NO ")
    imap.no("APPEND INBOX {0+}\r\n")  # a single empty message too
    assert _messages(imap, "INBOX") == 0


def test_missing_mailbox_and_syntax(imap: Transcript) -> None:
    one = message("x")
    imap.no(f"APPEND Nowhere {{{len(one)}+}}\r\n".encode() + one + f" {{{len(one)}+}}\r\n".encode() + one,
            code="TRYCREATE")  # RFC 3502 §6.3.11: never created automatically
    assert not [line for line in imap.ok('LIST "" Nowhere')]
    # After a message, only another message (or the end) may follow.
    imap.bad(f"APPEND INBOX {{{len(one)}+}}\r\n".encode() + one + b" junk")
    imap.bad(f"APPEND INBOX {{{len(one)}+}}\r\n".encode() + one + b" (\\Seen)")
    imap.bad(f"APPEND INBOX {{{len(one)}+}}\r\n".encode() + one + b" ")
    assert _messages(imap, "INBOX") == 0


def test_over_quota_appends_none(maild_factory: Callable[..., Any]) -> None:
    """The third message exceeds the quota: the first two, which fit, are not kept either
    (RFC 3502 §6.3.11: the mailbox is restored to its state before the APPEND). The bodies
    are large enough to be staged as blob files."""
    server = maild_factory(store={"default_quota_mb": 1}, imap={"allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    s.login("alice@example.test", "alice-secret")
    s.ok("SELECT INBOX")
    big = [b"Subject: big %d\r\n\r\n" % i + b"x" * 400_000 + b"\r\n" for i in range(3)]
    command = b"APPEND INBOX"
    for raw in big:
        command += b" {%d+}\r\n" % len(raw) + raw
    untagged, result = s.command(command)
    assert result.startswith(b"NO [OVERQUOTA]"), result
    assert not [line for line in untagged if b"EXISTS" in line]
    assert _messages(s, "INBOX") == 0
    assert s.ok("UID SEARCH ALL") == [b"* SEARCH"]
    # Two fit: both are appended, with consecutive uids.
    untagged, result = s.command(command.rsplit(b" {", 1)[0])
    assert result.startswith(b"OK [APPENDUID ") and result.split(b"]")[0].endswith(b" 1:2"), result
    assert b"* 2 EXISTS" in untagged


def test_total_size_is_bounded(maild_factory: Callable[..., Any]) -> None:
    """Each message is held until the last has arrived, so the whole command is bounded:
    APPENDLIMIT per message, APPENDLIMIT + max_command_size in all, refused before reading."""
    server = maild_factory(imap={"append_limit": 3000, "max_command_size": 2000,
                                 "allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    s.login("alice@example.test", "alice-secret")
    raw = b"Subject: s\r\n\r\n" + b"y" * 2800 + b"\r\n"
    s.send(f"a APPEND INBOX {{{len(raw)}}}")
    assert s.line().startswith(b"+ ")
    s.send(raw + f" {{{len(raw)}}}".encode())
    assert s.line() == b"a NO [TOOBIG] message larger than APPENDLIMIT"
    s.ok("NOOP")  # the client sent nothing more; the session goes on
    assert _messages(s, "INBOX") == 0
