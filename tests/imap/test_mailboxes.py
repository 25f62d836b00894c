"""CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LSUB (RFC 3501 §6.3), CREATE-SPECIAL-USE (RFC 6154)."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_create_delete_rename(imap: Transcript) -> None:
    imap.ok("CREATE Projects/2024/Q1")  # superiors are created too (RFC 3501 §6.3.3)
    names = [line.rsplit(b" ", 1)[1] for line in imap.ok('LIST "" Projects*')]
    assert names == [b"Projects", b"Projects/2024", b"Projects/2024/Q1"]
    imap.no("CREATE Projects", code="ALREADYEXISTS")
    imap.no("CREATE inbox", code="ALREADYEXISTS")
    imap.no("DELETE Projects", code="INUSE")
    imap.ok("RENAME Projects Work")
    assert imap.ok('LIST "" Work/%') == [b'* LIST (\\HasChildren) "/" Work/2024']
    imap.no("RENAME Nope Other", code="NONEXISTENT")
    imap.no("RENAME Work Sent", code="ALREADYEXISTS")
    imap.ok("DELETE Work/2024/Q1")
    imap.no("DELETE Work/2024/Q1", code="NONEXISTENT")
    imap.no("DELETE INBOX")
    imap.ok('CREATE "Entw&APw-rfe"')
    assert imap.ok('LIST "" Entw*') == [b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe']


def test_rename_inbox_moves_messages(imap: Transcript) -> None:
    append(imap, "INBOX", message("a"))
    append(imap, "INBOX", message("b"))
    imap.ok("RENAME INBOX Old")  # RFC 3501 §6.3.5
    assert imap.ok("STATUS INBOX (MESSAGES)") == [b"* STATUS INBOX (MESSAGES 0)"]
    assert imap.ok("STATUS Old (MESSAGES)") == [b"* STATUS Old (MESSAGES 2)"]


def test_create_special_use(imap: Transcript) -> None:
    imap.ok("CREATE Everything (USE (\\All))")
    assert imap.ok('LIST "" Everything') == [b'* LIST (\\HasNoChildren \\All) "/" Everything']
    imap.no("CREATE Other (USE (\\Bogus))", code="USEATTR")
