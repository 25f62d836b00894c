"""STATUS (RFC 3501 §6.3.10, with HIGHESTMODSEQ of RFC 7162 and APPENDLIMIT of RFC 7889)."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_status_items(imap: Transcript) -> None:
    append(imap, "INBOX", message("a"), "\\Seen")
    append(imap, "INBOX", message("b"))
    line = imap.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN HIGHESTMODSEQ APPENDLIMIT SIZE)")[0]
    assert line.startswith(b"* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 1 HIGHESTMODSEQ ")
    assert b"APPENDLIMIT 52428800 SIZE " in line
    assert imap.ok("STATUS Trash (UIDVALIDITY)")[0].startswith(b"* STATUS Trash (UIDVALIDITY ")
    imap.no("STATUS Nope (MESSAGES)", code="NONEXISTENT")
    imap.bad("STATUS INBOX ()")
