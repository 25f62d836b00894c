"""COPY (RFC 3501 §6.4.7) with COPYUID (RFC 4315) and MOVE (RFC 6851)."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_copy(imap: Transcript) -> None:
    for i in range(3):
        append(imap, "INBOX", message(f"c{i}"), "\\Flagged")
    imap.ok("SELECT INBOX")
    untagged, result = imap.command("COPY 2:3 Archive")
    assert result.startswith(b"OK [COPYUID ") and result.split(b"]")[0].endswith(b" 2:3 1:2")
    assert untagged == []
    imap.no("COPY 1 Nope", code="TRYCREATE")
    imap.bad("COPY 9 Archive")
    assert imap.ok("UID COPY 99 Archive") == []
    assert imap.ok("STATUS Archive (MESSAGES)") == [b"* STATUS Archive (MESSAGES 2)"]
    # The copies keep their flags and are \Recent for the next session (RFC 3501 §6.4.7);
    # EXAMINE shows that without taking it (§6.3.2).
    assert b"* 2 RECENT" in imap.ok("EXAMINE Archive")
    assert imap.ok("FETCH 1:* FLAGS") == [b"* 1 FETCH (FLAGS (\\Flagged \\Recent))",
                                          b"* 2 FETCH (FLAGS (\\Flagged \\Recent))"]
    assert b"* 2 RECENT" in imap.ok("SELECT Archive")
    assert b"* 0 RECENT" in imap.ok("SELECT Archive")


def test_move(imap: Transcript) -> None:
    for i in range(4):
        append(imap, "INBOX", message(f"m{i}"))
    imap.ok("SELECT INBOX")
    untagged = imap.ok("MOVE 2:3 Trash")
    assert untagged[0].startswith(b"* OK [COPYUID ") and untagged[0].split(b"]")[0].endswith(b" 2:3 1:2")
    assert untagged[1:] == [b"* 3 EXPUNGE", b"* 2 EXPUNGE"]
    untagged = imap.ok("UID MOVE 1:* Trash")
    assert untagged[1:] == [b"* 2 EXPUNGE", b"* 1 EXPUNGE"]
    imap.no("UID MOVE 1 Nope", code="TRYCREATE")
    assert imap.ok("STATUS Trash (MESSAGES)") == [b"* STATUS Trash (MESSAGES 4)"]
    imap.ok("EXAMINE Trash")
    imap.no("MOVE 1 INBOX", code="READ-ONLY")
