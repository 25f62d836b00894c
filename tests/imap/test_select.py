"""SELECT / EXAMINE (RFC 3501 §6.3.1-2, RFC 7162 CONDSTORE), UNSELECT (RFC 3691), CLOSE."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_select_responses(imap: Transcript) -> None:
    append(imap, "INBOX", message("one"), "\\Seen")
    append(imap, "INBOX", message("two"))
    lines = imap.ok("SELECT INBOX", code="READ-WRITE")
    # Both arrived since any session selected INBOX: \Recent here (RFC 3501 §2.3.2).
    assert b"* 2 EXISTS" in lines and b"* 2 RECENT" in lines
    assert b"* OK [UNSEEN 2] First unseen" in lines
    assert any(line.startswith(b"* OK [UIDVALIDITY ") for line in lines)
    assert b"* OK [UIDNEXT 3] Predicted next UID" in lines
    assert any(line.startswith(b"* OK [HIGHESTMODSEQ ") for line in lines)
    assert any(b"PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)" in line for line in lines)
    lines = imap.ok("EXAMINE inbox", code="READ-ONLY")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted" in lines
    imap.no("STORE 1 +FLAGS (\\Deleted)", code="READ-ONLY")
    imap.ok("FETCH 2 BODY[TEXT]")  # no \Seen in a read-only mailbox
    imap.ok("SELECT INBOX")
    assert imap.ok("FETCH 2 FLAGS") == [b"* 2 FETCH (FLAGS ())"]
    imap.no("SELECT Nope", code="NONEXISTENT")
    imap.bad("FETCH 1 FLAGS")  # a failed SELECT leaves no mailbox selected


def test_unselect_and_close(imap: Transcript) -> None:
    append(imap, "INBOX", message("keep"))
    append(imap, "INBOX", message("drop"), "\\Deleted")
    imap.ok("SELECT INBOX")
    imap.ok("UNSELECT")
    imap.bad("UNSELECT")
    imap.ok("SELECT INBOX")
    assert imap.ok("CLOSE") == []  # expunges silently
    assert imap.ok("STATUS INBOX (MESSAGES)") == [b"* STATUS INBOX (MESSAGES 1)"]
    imap.ok("EXAMINE INBOX")
    imap.ok("CHECK")
    imap.ok("CLOSE")
