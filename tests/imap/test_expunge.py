"""EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1)."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_expunge_and_uid_expunge(imap: Transcript) -> None:
    for i in range(5):
        append(imap, "INBOX", message(f"e{i}"))
    imap.ok("SELECT INBOX")
    imap.ok("STORE 1,3,4 +FLAGS.SILENT (\\Deleted)")
    assert imap.ok("UID EXPUNGE 3:5") == [b"* 4 EXPUNGE", b"* 3 EXPUNGE"]
    assert imap.ok("EXPUNGE") == [b"* 1 EXPUNGE"]
    assert imap.ok("FETCH 1:* UID") == [b"* 1 FETCH (UID 2)", b"* 2 FETCH (UID 5)"]
    assert imap.ok("EXPUNGE") == []
    imap.ok("EXAMINE INBOX")
    imap.no("EXPUNGE", code="READ-ONLY")
