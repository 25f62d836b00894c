"""SUBSCRIBE, UNSUBSCRIBE, LSUB (RFC 3501 §6.3.6, §6.3.7, §6.3.9) and LIST (SUBSCRIBED)
(RFC 5258 §3): the subscription list is names, kept apart from the mailboxes."""

from __future__ import annotations

from tests.imap.conftest import Transcript


def test_defaults_subscribed_create_does_not(imap: Transcript) -> None:
    lsub = imap.ok('LSUB "" *')
    assert {line.split(b" ")[-1] for line in lsub} == {b"INBOX", b"Sent", b"Drafts", b"Junk", b"Trash", b"Archive"}
    imap.ok("CREATE Lists/Python")  # RFC 3501 §6.3.3: CREATE does not subscribe
    assert not [line for line in imap.ok('LSUB "" *') if b"Lists" in line]
    assert imap.ok('LIST "" Lists/Python RETURN (SUBSCRIBED)') == [b'* LIST (\\HasNoChildren) "/" Lists/Python']


def test_subscribe_nonexistent_and_delete_keeps_it(imap: Transcript) -> None:
    imap.ok("SUBSCRIBE Nope")  # RFC 3501 §6.3.6: a name that does not exist may be subscribed
    assert imap.ok('LSUB "" Nope') == [b'* LSUB (\\Noselect) "/" Nope']
    assert imap.ok('LIST (SUBSCRIBED) "" Nope') == [b'* LIST (\\NonExistent \\Subscribed) "/" Nope']
    assert imap.ok('LIST "" Nope') == []
    imap.ok("CREATE Work")
    imap.ok("SUBSCRIBE Work")
    assert imap.ok('LSUB "" Work') == [b'* LSUB () "/" Work']
    imap.ok("DELETE Work")  # RFC 3501 §6.3.4: the subscription stays
    assert imap.ok('LIST (SUBSCRIBED) "" Work') == [b'* LIST (\\NonExistent \\Subscribed) "/" Work']
    imap.ok("CREATE Work")
    assert imap.ok('LIST (SUBSCRIBED) "" Work') == [b'* LIST (\\HasNoChildren \\Subscribed) "/" Work']
    imap.ok("UNSUBSCRIBE Work")
    imap.ok("UNSUBSCRIBE Nope")
    assert imap.ok('LSUB "" Work') == [] and imap.ok('LSUB "" Nope') == []


def test_lsub_percent_shows_noselect_parent(imap: Transcript) -> None:
    imap.ok("CREATE Foo/Bar")
    imap.ok("SUBSCRIBE Foo/Bar")
    # RFC 3501 §6.3.9: '%' stops at Foo, which is not subscribed: \Noselect.
    assert imap.ok('LSUB "" %') == [
        b'* LSUB () "/" INBOX', b'* LSUB () "/" Archive', b'* LSUB () "/" Drafts',
        b'* LSUB (\\Noselect) "/" Foo', b'* LSUB () "/" Junk', b'* LSUB () "/" Sent', b'* LSUB () "/" Trash']
    # With '*' the child matches itself and the unsubscribed parent is not listed.
    assert [line for line in imap.ok('LSUB "" *') if b"Foo" in line] == [b'* LSUB () "/" Foo/Bar']
    assert imap.ok('LSUB "" Foo/%') == [b'* LSUB () "/" Foo/Bar']


def test_list_subscribed_recursivematch(imap: Transcript) -> None:
    imap.ok("CREATE Top/Mid/Leaf")
    imap.ok("SUBSCRIBE Top/Mid/Leaf")
    imap.ok("SUBSCRIBE Gone/Child")  # neither exists
    # RFC 5258 §3.5: parents of subscribed names, with CHILDINFO; without RECURSIVEMATCH
    # only the subscribed names themselves.
    assert imap.ok('LIST (SUBSCRIBED) "" %') == [
        b'* LIST (\\HasNoChildren \\Subscribed) "/" INBOX',
        b'* LIST (\\HasNoChildren \\Archive \\Subscribed) "/" Archive',
        b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" Drafts',
        b'* LIST (\\HasNoChildren \\Junk \\Subscribed) "/" Junk',
        b'* LIST (\\HasNoChildren \\Sent \\Subscribed) "/" Sent',
        b'* LIST (\\HasNoChildren \\Trash \\Subscribed) "/" Trash']
    recursive = imap.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" %')
    assert b'* LIST (\\NonExistent) "/" Gone ("CHILDINFO" ("SUBSCRIBED"))' in recursive
    assert b'* LIST (\\HasChildren) "/" Top ("CHILDINFO" ("SUBSCRIBED"))' in recursive
    assert not [line for line in recursive if b"Leaf" in line]
    deep = imap.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" Top/*')
    assert deep == [b'* LIST (\\HasChildren) "/" Top/Mid ("CHILDINFO" ("SUBSCRIBED"))',
                    b'* LIST (\\HasNoChildren \\Subscribed) "/" Top/Mid/Leaf']


def test_rename_moves_subscription(imap: Transcript) -> None:
    imap.ok("CREATE Old/Sub")
    imap.ok("SUBSCRIBE Old/Sub")
    imap.ok("RENAME Old New")
    assert [line for line in imap.ok('LSUB "" *') if b"Old" in line or b"New" in line] == [b'* LSUB () "/" New/Sub']
