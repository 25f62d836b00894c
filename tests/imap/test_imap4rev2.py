"""IMAP4rev2 (RFC 9051) beside IMAP4rev1: both advertised, ``ENABLE IMAP4rev2`` switches a
session to RFC 9051's rules (Appendix E): no \\Recent, ESEARCH answers to SEARCH, no
RECENT/NEW/OLD or STATUS RECENT, STATUS DELETED, SELECT's LIST response, UTF-8 names."""

from __future__ import annotations

from collections.abc import Callable

from tests.imap.conftest import Account, Transcript, append, message

# RFC 9051 §1 / Appendix E: what IMAP4rev2 folds in from extensions; a server that says
# IMAP4rev2 has each (LITERAL+ includes LITERAL-).
FOLDED_IN = (b"UNSELECT", b"UIDPLUS", b"MOVE", b"ESEARCH", b"SEARCHRES", b"ENABLE", b"IDLE",
             b"SASL-IR", b"LIST-EXTENDED", b"LIST-STATUS", b"LITERAL+", b"BINARY", b"SPECIAL-USE",
             b"STATUS=SIZE", b"NAMESPACE", b"CHILDREN", b"ID")


def rev2(connect: Callable[..., Transcript]) -> Transcript:
    s = connect()
    assert s.ok("ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2"]
    return s


def next_tag(s: Transcript) -> bytes:
    return b"t%d" % (s.counter + 1)


def test_both_revisions_are_advertised(connect: Callable[..., Transcript], account: Account) -> None:
    s = connect(login=False)
    assert b" IMAP4rev1 IMAP4rev2 " in s.greeting
    s.login(account.address, account.password)
    (caps,) = s.ok("CAPABILITY")
    words = caps.split()
    assert b"IMAP4rev1" in words and b"IMAP4rev2" in words
    assert all(cap in words for cap in FOLDED_IN), [c for c in FOLDED_IN if c not in words]


def test_enable_once_and_only_before_select(connect: Callable[..., Transcript]) -> None:
    s = rev2(connect)
    assert s.ok("ENABLE IMAP4rev2") == [b"* ENABLED"]  # RFC 5161 §3.2: already enabled
    s.ok("SELECT INBOX")
    s.bad("ENABLE IMAP4rev2")  # RFC 5161 §3.1: authenticated state only


def test_no_recent_and_select_responses(connect: Callable[..., Transcript]) -> None:
    other = connect()
    append(other, "INBOX", message("one"), "\\Seen")
    append(other, "INBOX", message("two"))
    s = rev2(connect)
    lines = s.ok("SELECT INBOX", code="READ-WRITE")
    # RFC 9051 §6.3.2: FLAGS, EXISTS, LIST; no RECENT (§7.4 has none) and no UNSEEN code.
    assert b"* 2 EXISTS" in lines
    assert b'* LIST (\\HasNoChildren) "/" INBOX' in lines
    assert not [line for line in lines if b"RECENT" in line or b"[UNSEEN" in line], lines
    assert any(line.startswith(b"* FLAGS (") for line in lines)
    assert any(line.startswith(b"* OK [UIDVALIDITY ") for line in lines)
    assert any(line.startswith(b"* OK [UIDNEXT 3]") for line in lines)
    assert any(line.startswith(b"* OK [PERMANENTFLAGS ") for line in lines)
    assert s.ok("FETCH 1:2 FLAGS") == [b"* 1 FETCH (FLAGS (\\Seen))", b"* 2 FETCH (FLAGS ())"]
    append(other, "INBOX", message("three"))
    assert s.ok("NOOP") == [b"* 3 EXISTS"]  # and no "* n RECENT"
    # The IMAP4rev2 session claimed nothing: an IMAP4rev1 session still gets all three recent.
    rev1 = connect()
    assert b"* 3 RECENT" in rev1.ok("SELECT INBOX")
    # Special use and children in SELECT's LIST response.
    s.ok("CREATE Trash/Old")
    assert b'* LIST (\\HasChildren \\Trash) "/" Trash' in s.ok("EXAMINE Trash", code="READ-ONLY")


def test_search_answers_esearch(connect: Callable[..., Transcript]) -> None:
    s = rev2(connect)
    for n in range(3):
        append(s, "INBOX", message(f"m{n}"), "\\Flagged" if n != 1 else "")
    s.ok("SELECT INBOX")
    # RFC 9051 §6.4.4: without RETURN, SEARCH answers ESEARCH with ALL (§7.3.4).
    tag = next_tag(s)
    assert s.ok("SEARCH FLAGGED") == [b'* ESEARCH (TAG "' + tag + b'") ALL 1,3']
    tag = next_tag(s)
    assert s.ok("UID SEARCH ALL") == [b'* ESEARCH (TAG "' + tag + b'") UID ALL 1:3']
    tag = next_tag(s)
    assert s.ok("UID SEARCH DELETED") == [b'* ESEARCH (TAG "' + tag + b'") UID']  # no match
    tag = next_tag(s)
    assert s.ok("SEARCH RETURN (COUNT) ALL") == [b'* ESEARCH (TAG "' + tag + b'") COUNT 3']
    tag = next_tag(s)
    assert s.ok("SEARCH CHARSET UTF-8 SUBJECT m2") == [b'* ESEARCH (TAG "' + tag + b'") ALL 3']
    # RECENT, NEW and OLD are not IMAP4rev2 search keys.
    for key in ("RECENT", "NEW", "OLD", "NOT RECENT", "OR SEEN NEW"):
        s.bad(f"SEARCH {key}")
        s.bad(f"UID SEARCH RETURN (ALL) {key}")
    s.bad("SORT (ARRIVAL) UTF-8 RECENT")
    # SORT is an extension and keeps its own answer.
    assert s.ok("SORT (REVERSE ARRIVAL) UTF-8 ALL") == [b"* SORT 3 2 1"]


def test_status_items(connect: Callable[..., Transcript]) -> None:
    s = rev2(connect)
    s.ok("CREATE Box")
    raw = message("x")
    append(s, "Box", raw, "\\Deleted \\Seen")
    append(s, "Box", raw)
    append(s, "Box", raw, "\\Deleted")
    # RFC 9051 §6.3.11: DELETED, SIZE; RECENT is gone.
    assert s.ok("STATUS Box (MESSAGES DELETED SIZE)") == [
        b"* STATUS Box (MESSAGES 3 DELETED 2 SIZE %d)" % (3 * len(raw))]
    s.bad("STATUS Box (MESSAGES RECENT)")
    assert s.bad('LIST "" "*" RETURN (STATUS (RECENT))') == []  # refused before any LIST
    lines = s.ok('LIST "" "Box" RETURN (STATUS (DELETED))')
    assert lines == [b'* LIST (\\HasNoChildren) "/" Box', b"* STATUS Box (DELETED 2)"]
    # An IMAP4rev1 session keeps RECENT (and may ask DELETED).
    rev1 = connect()
    assert rev1.ok("STATUS Box (RECENT DELETED)") == [b"* STATUS Box (RECENT 3 DELETED 2)"]


def test_mailbox_names_are_utf8(connect: Callable[..., Transcript]) -> None:
    s = rev2(connect)
    s.ok('CREATE "Entwürfe"'.encode())  # RFC 9051 §5.1: UTF-8, not modified UTF-7
    assert s.ok('LIST "" "Entw*"') == ['* LIST (\\HasNoChildren) "/" "Entwürfe"'.encode()]
    # The same mailbox as an IMAP4rev1 client names it.
    rev1 = connect()
    assert rev1.ok('LIST "" "Entw*"') == [b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe']
    assert rev1.ok("STATUS Entw&APw-rfe (MESSAGES)") == [b"* STATUS Entw&APw-rfe (MESSAGES 0)"]


def test_rev1_session_unchanged(connect: Callable[..., Transcript]) -> None:
    s = connect()
    append(s, "INBOX", message("a"))
    lines = s.ok("SELECT INBOX")
    assert b"* 1 RECENT" in lines and not [line for line in lines if line.startswith(b"* LIST")]
    assert s.ok("SEARCH RECENT") == [b"* SEARCH 1"]
    assert s.ok("SEARCH ALL") == [b"* SEARCH 1"]
