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


def mailbox_names(imap: Transcript) -> list[bytes]:
    return [line.rsplit(b" ", 1)[1] for line in imap.ok('LIST "" *')]


def test_create_ignores_a_trailing_separator(imap: Transcript) -> None:
    imap.ok("CREATE Folder/")  # RFC 3501 §6.3.3: the separator declares intent, and is ignored
    imap.ok("CREATE Folder/Sub/")
    assert [n for n in mailbox_names(imap) if n.startswith(b"Folder")] == [b"Folder", b"Folder/Sub"]
    imap.no("CREATE Folder/", code="ALREADYEXISTS")
    # Other commands name no mailbox with it: NO, never BAD (RFC 3501 §7.1: BAD is syntax).
    imap.no("SELECT Folder/")
    imap.no("SELECT a//b")
    imap.no("CREATE /")
    imap.ok("DELETE Folder/Sub")


def test_invalid_mutf7_is_no_and_matches_nothing(imap: Transcript) -> None:
    untagged, result = imap.command("CREATE &Jjo")
    assert result.startswith(b"NO ") and b"not valid mUTF-7" in result
    imap.no("SELECT &Jjo-")  # ASCII would have to be written as itself
    imap.no("RENAME Sent &AGE-x")
    imap.no("STATUS &Jjo (MESSAGES)")
    imap.no("SUBSCRIBE &Jjo")
    assert imap.ok('LIST "" &Jjo') == []  # as a pattern it matches nothing, and LIST is OK
    assert imap.ok('LIST "" (&Jjo INBOX)') == [b'* LIST (\\HasNoChildren) "/" INBOX']
    assert imap.ok('LSUB "&Jjo" *') == []


def test_name_limits_dot_components_and_atomic_create(imap: Transcript) -> None:
    """Limits in docs/imap.md: 255 octets a level, 500 in all, 32 levels; "." and ".." are
    no level; a refused CREATE leaves nothing behind (the store's key limit is never hit)."""
    before = mailbox_names(imap)
    imap.no("CREATE " + "x" * 256, code="CANNOT")
    imap.no("CREATE " + "/".join(["y" * 200] * 3), code="CANNOT")  # 602 octets
    imap.no('CREATE "' + "/".join(["lvl"] * 200) + '"', code="CANNOT")
    imap.no('CREATE "' + "/".join(["z"] * 2000) + '"', code="CANNOT")
    imap.no('CREATE "../bob/INBOX/x"', code="CANNOT")
    imap.no('CREATE "a/./b"', code="CANNOT")
    imap.no('CREATE ".."', code="CANNOT")
    imap.no('RENAME Sent "Sent/../x"', code="CANNOT")
    imap.no("SELECT " + "x" * 600, code="NONEXISTENT")
    assert mailbox_names(imap) == before  # nothing was made by the refused commands
    deepest = "/".join(f"l{i}" for i in range(32))
    imap.ok(f'CREATE "{deepest}"')
    imap.no(f'CREATE "{deepest}/one-too-many"', code="CANNOT")
    imap.ok("CREATE " + "w" * 255)
    assert len(mailbox_names(imap)) == len(before) + 33


def test_rename_creates_parents_in_one_step(imap: Transcript) -> None:
    imap.ok("CREATE Source")
    imap.ok("RENAME Source Deep/er/Target")
    assert [n for n in mailbox_names(imap) if n.startswith(b"Deep")] == [b"Deep", b"Deep/er", b"Deep/er/Target"]
    imap.ok("CREATE Other")
    imap.no("RENAME Other Deep/er/Target", code="ALREADYEXISTS")
    imap.no('RENAME Other "New/' + "q" * 300 + '"', code="CANNOT")
    assert not [n for n in mailbox_names(imap) if n.startswith(b"New")]  # no parent left behind


def test_rename_refuses_inferiors_past_the_limits(imap: Transcript) -> None:
    imap.ok("CREATE Top/" + "c" * 200)
    long_name = "n" * 255 + "/" + "m" * 100  # valid itself; Top's child would pass 500 octets
    imap.no(f'RENAME Top "{long_name}"', code="CANNOT")
    assert [n for n in mailbox_names(imap) if n.startswith(b"Top")] == [b"Top", b"Top/" + b"c" * 200]
    assert not [n for n in mailbox_names(imap) if n.startswith(b"nnn")]
