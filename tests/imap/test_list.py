"""LIST and its extensions: CHILDREN, LIST-EXTENDED (RFC 5258), SPECIAL-USE (RFC 6154),
LIST-STATUS (RFC 5819)."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_list_patterns(imap: Transcript) -> None:
    imap.ok("CREATE Sent/2023")
    assert imap.ok('LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
    top = imap.ok('LIST "" %')
    assert top[0] == b'* LIST (\\HasNoChildren) "/" INBOX'
    assert b'* LIST (\\HasChildren \\Sent) "/" Sent' in top
    assert not any(b"2023" in line for line in top)
    assert imap.ok('LIST Sent/ %') == [b'* LIST (\\HasNoChildren) "/" Sent/2023']
    assert imap.ok('LIST "" inbox') == [b'* LIST (\\HasNoChildren) "/" INBOX']
    assert len(imap.ok('LIST "" *')) == 7


def test_list_extended(imap: Transcript) -> None:
    imap.ok("CREATE Lists/Python")
    imap.ok("SUBSCRIBE Lists/Python")  # CREATE does not subscribe (RFC 3501 §6.3.3)
    special = imap.ok('LIST (SPECIAL-USE) "" *')
    assert {line.split(b" ")[-1] for line in special} == {b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"}
    subscribed = imap.ok('LIST (SUBSCRIBED) "" "Lists*"')
    assert subscribed == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Lists/Python']
    recursive = imap.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert b'* LIST (\\HasChildren) "/" Lists ("CHILDINFO" ("SUBSCRIBED"))' in recursive
    multi = imap.ok('LIST "" (INBOX Trash) RETURN (SUBSCRIBED CHILDREN)')
    assert multi == [b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
                     b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" Trash']


def test_list_status(imap: Transcript) -> None:
    append(imap, "Drafts", message("draft"))
    lines = imap.ok('LIST "" Drafts RETURN (STATUS (MESSAGES UNSEEN UIDNEXT))')
    assert lines == [b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts',
                     b"* STATUS Drafts (MESSAGES 1 UNSEEN 1 UIDNEXT 2)"]
    imap.bad('LIST "" * RETURN (STATUS (BOGUS))')


def test_list_pattern_not_mutf7_matches_nothing(imap: Transcript) -> None:
    assert imap.ok('LIST "" "&Jjo*"') == []  # RFC 3501 §6.3.8: OK, no match; never BAD
    assert imap.ok('LIST "" "%&-"') == []
