"""UTF8=ACCEPT (RFC 6855): ENABLE UTF8=ACCEPT switches mailbox names from modified UTF-7 to
UTF-8 in both directions (§3), forbids SEARCH CHARSET (§3) and allows APPEND's UTF8 data
item with a literal8 (§4)."""

from __future__ import annotations

import imaplib
from collections.abc import Callable

from tests.imap.conftest import Transcript, append

UTF8_MESSAGE = ("From: Jürgen <jürgen@exämple.test>\r\nTo: alice@example.test\r\n"
                "Subject: Grüße aus Köln\r\nMessage-ID: <u1@example.test>\r\n\r\nHallo, Welt!\r\n").encode()


def test_enable_and_mailbox_names(connect: Callable[..., Transcript]) -> None:
    legacy = connect()
    modern = connect()
    assert b"UTF8=ACCEPT" in modern.ok("CAPABILITY")[0].split()
    assert modern.ok("ENABLE UTF8=ACCEPT") == [b"* ENABLED UTF8=ACCEPT"]
    assert modern.ok("ENABLE UTF8=ACCEPT") == [b"* ENABLED"]  # RFC 5161 §3.2: only newly enabled
    # A name created in modified UTF-7 is listed in UTF-8 to the session that enabled it...
    legacy.ok("CREATE &ZeVnLIqe-")
    assert modern.ok('LIST "" *') [-1] == '* LIST (\\HasNoChildren) "/" "日本語"'.encode()
    # ...and one created in UTF-8 (with "&", literal in UTF-8) is mUTF-7 to the other.
    modern.ok('CREATE "Café & Co"'.encode())
    assert legacy.ok('LIST "" Caf*') == [b'* LIST (\\HasNoChildren) "/" "Caf&AOk- &- Co"']
    assert modern.ok(b'LIST "" Caf*') == ['* LIST (\\HasNoChildren) "/" "Café & Co"'.encode()]
    assert modern.ok("STATUS 日本語 (MESSAGES)".encode()) == ['* STATUS "日本語" (MESSAGES 0)'.encode()]
    assert modern.ok('SELECT "Café & Co"'.encode())
    # mUTF-7 is no longer decoded: "&ZeVnLIqe-" is a name of its own, which does not exist.
    modern.no("STATUS &ZeVnLIqe- (MESSAGES)", code="NONEXISTENT")
    # The legacy session still speaks mUTF-7 only.
    assert legacy.ok("STATUS &ZeVnLIqe- (MESSAGES)") == [b"* STATUS &ZeVnLIqe- (MESSAGES 0)"]


def test_search_without_charset(connect: Callable[..., Transcript]) -> None:
    modern = connect()
    append(modern, "INBOX", UTF8_MESSAGE)
    modern.ok("ENABLE UTF8=ACCEPT")
    modern.ok("SELECT INBOX")
    assert modern.ok('SEARCH SUBJECT "Köln"'.encode()) == [b"* SEARCH 1"]
    modern.bad('SEARCH CHARSET UTF-8 SUBJECT "Köln"'.encode())  # RFC 6855 §3
    modern.bad("SEARCH CHARSET ISO-8859-1 ALL")  # BAD whatever the charset, not NO [BADCHARSET]


def test_append_utf8_data_item(connect: Callable[..., Transcript]) -> None:
    legacy = connect()
    modern = connect()
    size = len(UTF8_MESSAGE)
    # Only after ENABLE (RFC 6855 §4).
    legacy.bad(f"APPEND INBOX UTF8 (~{{{size}+}}\r\n".encode() + UTF8_MESSAGE + b")")
    modern.ok("ENABLE UTF8=ACCEPT")
    untagged, result = modern.command(f"APPEND INBOX (\\Seen) UTF8 (~{{{size}+}}\r\n".encode() + UTF8_MESSAGE + b")")
    assert result.startswith(b"OK [APPENDUID ") and result.split(b"]")[0].endswith(b" 1"), result
    # A synchronizing literal8 gets its continuation.
    modern.send(f"a1 APPEND INBOX UTF8 (~{{{size}}}".encode())
    assert modern.line().startswith(b"+ ")
    modern.send(UTF8_MESSAGE + b")")
    assert modern.collect("a1")[1].startswith(b"OK [APPENDUID ")
    modern.bad(f"APPEND INBOX UTF8 (~{{{size}+}}\r\n".encode() + UTF8_MESSAGE)  # the ")" is required
    modern.ok("SELECT INBOX")
    lines = modern.ok("FETCH 1:2 (FLAGS BODY.PEEK[])")
    # \Recent: this session's SELECT was the first to see them (RFC 3501 §2.3.2).
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Recent \\Seen) BODY[] {%d}" % size)
    assert lines[0].endswith(UTF8_MESSAGE + b")")
    assert lines[1].endswith(UTF8_MESSAGE + b")")


def test_imaplib_utf8_mode(imaplib_client: imaplib.IMAP4_SSL) -> None:
    """Python's imaplib sends names as UTF-8 once ENABLE UTF8=ACCEPT succeeded."""
    typ, _ = imaplib_client.enable("UTF8=ACCEPT")
    assert typ == "OK" and imaplib_client.untagged_responses.pop("ENABLED") == [b"UTF8=ACCEPT"]
    assert imaplib_client.create('"Größe/Übersicht"')[0] == "OK"
    typ, listed = imaplib_client.list('""', '"Größe/*"')
    assert typ == "OK" and listed == ['(\\HasNoChildren) "/" "Größe/Übersicht"'.encode()]
    typ, data = imaplib_client.select('"Größe/Übersicht"')
    assert typ == "OK" and data == [b"0"]
