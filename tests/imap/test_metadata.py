"""METADATA (RFC 5464): SETMETADATA / GETMETADATA on the server ("") and on mailboxes,
DEPTH and MAXSIZE (§4.2), all-or-none writes with MAXSIZE and TOOMANY limits (§4.3),
entries following RENAME and leaving with DELETE."""

from __future__ import annotations

from collections.abc import Callable

from maild.imap.metadata import MAX_ENTRIES, MAX_VALUE
from tests.imap.conftest import Transcript


def test_server_and_mailbox_entries(connect: Callable[..., Transcript]) -> None:
    imap = connect()
    assert b"METADATA" in imap.ok("CAPABILITY")[0].split()
    imap.ok('SETMETADATA "" (/shared/comment "Alice\'s server notes")')
    assert imap.ok('GETMETADATA "" /shared/comment') == [b'* METADATA "" (/shared/comment "Alice\'s server notes")']
    text = "Zürich team inbox".encode()
    imap.ok(b"SETMETADATA INBOX (/private/comment {%d+}\r\n" % len(text) + text
            + b' /shared/vendor/deltachat/id "abc")')
    # Names compare without case; an entry never set is NIL (§4.2).
    assert imap.ok("GETMETADATA INBOX (/Private/Comment /shared/comment /shared/vendor/deltachat/id)") == [
        b"* METADATA INBOX (/private/comment {%d}\r\n" % len(text) + text
        + b' /shared/comment NIL /shared/vendor/deltachat/id "abc")']
    # Another session, and the server's entries are apart from the mailbox's.
    other = connect()
    assert other.ok("GETMETADATA INBOX /shared/vendor/deltachat/id") == [
        b'* METADATA INBOX (/shared/vendor/deltachat/id "abc")']
    assert other.ok('GETMETADATA "" /private/comment') == [b'* METADATA "" (/private/comment NIL)']
    # NIL removes (§4.3).
    other.ok("SETMETADATA INBOX (/private/comment NIL)")
    assert imap.ok("GETMETADATA INBOX /private/comment") == [b"* METADATA INBOX (/private/comment NIL)"]
    # A value with NUL goes both ways as a literal8.
    binary = b"\x00\x01\x02 bytes"
    imap.ok(b"SETMETADATA INBOX (/private/vendor/x/blob ~{%d+}\r\n" % len(binary) + binary + b")")
    assert imap.ok("GETMETADATA INBOX /private/vendor/x/blob") == [
        b"* METADATA INBOX (/private/vendor/x/blob ~{%d}\r\n" % len(binary) + binary + b")"]


def test_depth_and_maxsize(imap: Transcript) -> None:
    imap.ok('SETMETADATA Archive (/private/vendor/a "1" /private/vendor/a/b "2" /private/vendor/a/b/c "3" '
            '/private/vendor/ab "x")')
    assert imap.ok("GETMETADATA Archive /private/vendor/a") == [b'* METADATA Archive (/private/vendor/a "1")']
    assert imap.ok("GETMETADATA (DEPTH 1) Archive /private/vendor/a") == [
        b'* METADATA Archive (/private/vendor/a "1" /private/vendor/a/b "2")']
    assert imap.ok("GETMETADATA (DEPTH infinity) Archive (/private/vendor/a)") == [
        b'* METADATA Archive (/private/vendor/a "1" /private/vendor/a/b "2" /private/vendor/a/b/c "3")']
    long = "L" * 100
    imap.ok(f'SETMETADATA Archive (/shared/comment "{long}")')
    untagged, result = imap.command("GETMETADATA (MAXSIZE 10 DEPTH 1) Archive (/shared/comment /private/vendor/a)")
    assert untagged == [b'* METADATA Archive (/private/vendor/a "1" /private/vendor/a/b "2")']
    assert result.startswith(b"OK [METADATA LONGENTRIES 100]"), result
    imap.bad("GETMETADATA (DEPTH 2) Archive /shared/comment")
    imap.bad("GETMETADATA (FOO 1) Archive /shared/comment")


def test_limits_and_errors(imap: Transcript) -> None:
    too_big = b"v" * (MAX_VALUE + 1)
    # One value too large: nothing of the command is kept (§4.3).
    imap.no(b'SETMETADATA INBOX (/private/comment "kept?" /private/big {%d+}\r\n' % len(too_big) + too_big + b")",
            code=f"METADATA MAXSIZE {MAX_VALUE}")
    # Too many entries: refused whole.
    pairs = " ".join(f'/private/vendor/n/{i} "{i}"' for i in range(MAX_ENTRIES + 1))
    imap.no(f"SETMETADATA INBOX ({pairs})", code="METADATA TOOMANY")
    assert imap.ok("GETMETADATA (DEPTH infinity) INBOX (/private/comment /private/vendor/n)") == [
        b"* METADATA INBOX (/private/comment NIL /private/vendor/n NIL)"]
    imap.no('SETMETADATA Nowhere (/shared/comment "x")', code="NONEXISTENT")
    imap.no("GETMETADATA Nowhere /shared/comment", code="NONEXISTENT")
    for bad in ("/comment", "/private", "/private/", "/private//x", "/private/a*", "/shared/%", "/other/x"):
        imap.bad(f'SETMETADATA INBOX ({bad} "x")')
    imap.bad("SETMETADATA INBOX ()")
    imap.bad("GETMETADATA INBOX ()")


def test_rename_keeps_and_delete_drops(imap: Transcript) -> None:
    imap.ok("CREATE Lists")
    imap.ok('SETMETADATA Lists (/shared/comment "mailing lists")')
    imap.ok("RENAME Lists Groups")
    assert imap.ok("GETMETADATA Groups /shared/comment") == [b'* METADATA Groups (/shared/comment "mailing lists")']
    imap.ok("DELETE Groups")
    imap.ok("CREATE Groups")
    assert imap.ok("GETMETADATA Groups /shared/comment") == [b"* METADATA Groups (/shared/comment NIL)"]
