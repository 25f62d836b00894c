"""SEARCHRES (RFC 5182, part of IMAP4rev2: RFC 9051 §6.4.4): ``SEARCH RETURN (SAVE)`` and
``$`` as a sequence set in FETCH, STORE, COPY, MOVE, UID EXPUNGE, SEARCH and SORT."""

from __future__ import annotations

from collections.abc import Callable

from tests.imap.conftest import Transcript, append, message


def mailbox(s: Transcript, flagged: tuple[int, ...], count: int = 5) -> None:
    s.ok("CREATE Box")
    for n in range(1, count + 1):
        append(s, "Box", message(f"m{n}"), "\\Flagged" if n in flagged else "")
    s.ok("SELECT Box")


def test_save_then_use(connect: Callable[..., Transcript]) -> None:
    s = connect()
    mailbox(s, flagged=(2, 4, 5))
    # §2.4: SAVE alone sends no ESEARCH response.
    assert s.ok("SEARCH RETURN (SAVE) FLAGGED") == []
    assert s.ok("FETCH $ (UID)") == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)", b"* 5 FETCH (UID 5)"]
    assert s.ok("UID FETCH $ (RFC822.SIZE)") == [
        b"* %d FETCH (RFC822.SIZE %d UID %d)" % (n, len(message(f"m{n}")), n) for n in (2, 4, 5)]
    assert s.ok("SEARCH $ SUBJECT m4") == [b"* SEARCH 4"]
    assert s.ok("UID SEARCH NOT UID $") == [b"* SEARCH 1 3"]
    assert s.ok("SORT (REVERSE ARRIVAL) UTF-8 $") == [b"* SORT 5 4 2"]
    s.ok("STORE $ +FLAGS.SILENT (\\Seen)")
    assert s.ok("SEARCH SEEN") == [b"* SEARCH 2 4 5"]
    s.ok("CREATE Copies")
    s.ok("UID COPY $ Copies", code="COPYUID")
    assert s.ok("STATUS Copies (MESSAGES)") == [b"* STATUS Copies (MESSAGES 3)"]
    # The saved result is messages: after an expunge it is the ones left.
    s.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
    assert s.ok("EXPUNGE") == [b"* 4 EXPUNGE"]
    assert s.ok("FETCH $ (UID)") == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 5)"]
    s.ok("MOVE $ Copies")
    assert s.ok("STATUS Copies (MESSAGES)") == [b"* STATUS Copies (MESSAGES 5)"]


def test_save_with_other_options(connect: Callable[..., Transcript]) -> None:
    s = connect()
    mailbox(s, flagged=(1, 3, 5))
    tag = b"t%d" % (s.counter + 1)
    # §2.4: with MIN and MAX only those are saved; the ESEARCH answer is as without SAVE.
    assert s.ok("SEARCH RETURN (SAVE MIN MAX) FLAGGED") == [b'* ESEARCH (TAG "' + tag + b'") MIN 1 MAX 5']
    assert s.ok("FETCH $ (UID)") == [b"* 1 FETCH (UID 1)", b"* 5 FETCH (UID 5)"]
    s.ok("SEARCH RETURN (SAVE MAX) FLAGGED")
    assert s.ok("FETCH $ (UID)") == [b"* 5 FETCH (UID 5)"]
    # With COUNT every match is saved.
    tag = b"t%d" % (s.counter + 1)
    assert s.ok("UID SEARCH RETURN (MIN SAVE COUNT) FLAGGED") == [b'* ESEARCH (TAG "' + tag + b'") UID MIN 1 COUNT 3']
    assert s.ok("FETCH $ (UID)") == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)", b"* 5 FETCH (UID 5)"]
    # SORT RETURN (SAVE) (ESORT with SEARCHRES): the set of its matches.
    assert s.ok("SORT RETURN (SAVE) (REVERSE ARRIVAL) UTF-8 UNFLAGGED") == []
    assert s.ok("FETCH $ (UID)") == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)"]
    # A SEARCH with SAVE that fails leaves "$" empty (§2.1).
    s.no("SEARCH RETURN (SAVE) CHARSET KOI8-R FLAGGED", code="BADCHARSET")
    assert s.ok("FETCH $ (UID)") == []
    # A search without SAVE leaves "$" as it was.
    s.ok("SEARCH RETURN (SAVE) UNFLAGGED")
    s.ok("SEARCH FLAGGED")
    assert s.ok("FETCH $ (UID)") == [b"* 2 FETCH (UID 2)", b"* 4 FETCH (UID 4)"]


def test_selecting_forgets(connect: Callable[..., Transcript]) -> None:
    s = connect()
    mailbox(s, flagged=(1, 2))
    s.ok("SEARCH RETURN (SAVE) FLAGGED")
    s.ok("SELECT Box")  # §2.1: a new selection starts with an empty "$"
    assert s.ok("FETCH $ (UID)") == []
    assert s.ok("SEARCH $") == [b"* SEARCH"]
    s.ok("UID EXPUNGE $")
    s.bad("FETCH $,1 (UID)")  # "$" stands alone
    s.bad("SELECT Box (QRESYNC (1 1 $))")


def test_imaplib_client(imaplib_client: object) -> None:
    import imaplib
    assert isinstance(imaplib_client, imaplib.IMAP4)
    imaplib_client.append("INBOX", "(\\Flagged)", None, message("flagged"))
    imaplib_client.append("INBOX", None, None, message("plain"))
    imaplib_client.select("INBOX")
    typ, _ = imaplib_client.search(None, "RETURN (SAVE) FLAGGED")
    assert typ == "OK"
    typ, data = imaplib_client.fetch("$", "(UID)")
    assert typ == "OK" and data == [b"1 (UID 1)"]


def test_vanished_of_saved(connect: Callable[..., Transcript]) -> None:
    s = connect()
    s.ok("ENABLE QRESYNC")
    mailbox(s, flagged=(2, 3))
    s.ok("UID SEARCH RETURN (SAVE) FLAGGED")
    s.ok("UID STORE 1,3 +FLAGS.SILENT (\\Deleted)")
    assert s.ok("EXPUNGE", code="HIGHESTMODSEQ") == [b"* VANISHED 1,3"]
    # RFC 7162 §3.2.6: the expunged UIDs of the set named, here "$" (uid 3, not 1).
    lines = s.ok("UID FETCH $ (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 3", lines
    assert len(lines) == 2 and lines[1].startswith(b"* 1 FETCH (") and b" UID 2 " in lines[1], lines
