"""OBJECTID (RFC 8474): MAILBOXID in CREATE, SELECT and STATUS (§4), EMAILID and THREADID
in FETCH (§5), and the EMAILID / THREADID search keys (§6)."""

from __future__ import annotations

import re

from tests.imap.conftest import Transcript, append, message

OBJECTID = rb"[A-Za-z0-9_-]{1,255}"  # RFC 8474 §7


def _code(result: bytes) -> bytes:
    match = re.match(rb"OK \[MAILBOXID \((" + OBJECTID + rb")\)\]", result)
    assert match, result
    return match.group(1)


def _status_id(imap: Transcript, mailbox: str) -> bytes:
    line = imap.ok(f"STATUS {mailbox} (MESSAGES MAILBOXID)")[0]
    match = re.search(rb"MAILBOXID \((" + OBJECTID + rb")\)", line)
    assert match and b"MESSAGES 0" in line, line
    return match.group(1)


def _fetch_ids(imap: Transcript, spec: str, item: bytes) -> list[bytes]:
    lines = imap.ok(f"UID FETCH {spec} ({item.decode()})")
    out = []
    for line in lines:
        match = re.search(item + rb" \((" + OBJECTID + rb")\)", line)
        assert match, line
        out.append(match.group(1))
    return out


def test_mailboxid(imap: Transcript) -> None:
    assert b"OBJECTID" in imap.ok("CAPABILITY")[0].split()
    untagged, result = imap.command("CREATE Projects")
    created = _code(result)  # §4.1: in CREATE's tagged OK
    assert _status_id(imap, "Projects") == created  # §4.3
    selected = [line for line in imap.ok("SELECT Projects") if b"MAILBOXID" in line]
    assert selected == [b"* OK [MAILBOXID (" + created + b")] Ok"]  # §4.2
    imap.ok("UNSELECT")
    # §4.1: RENAME keeps the id; a new mailbox of the old name has another.
    imap.ok("RENAME Projects Work")
    assert _status_id(imap, "Work") == created
    recreated = _code(imap.command("CREATE Projects")[1])
    assert recreated != created
    imap.ok("DELETE Projects")
    again = _code(imap.command("CREATE Projects")[1])
    assert again not in (created, recreated)
    # Every mailbox has its own; LIST-STATUS carries it too.
    ids = {_status_id(imap, name) for name in ("INBOX", "Sent", "Drafts", "Work", "Projects")}
    assert len(ids) == 5
    listed = imap.ok('LIST "" Work RETURN (STATUS (MAILBOXID))')
    assert listed[-1] == b"* STATUS Work (MAILBOXID (" + created + b"))"


def test_emailid_survives_move_and_copy(imap: Transcript) -> None:
    append(imap, "INBOX", message("first"))
    append(imap, "INBOX", message("second"))
    imap.ok("SELECT INBOX")
    first, second = _fetch_ids(imap, "1:2", b"EMAILID")
    assert first != second
    # The same message, fetched again, and with other items around it.
    line = imap.ok("FETCH 1 (FLAGS EMAILID UID)")[0]
    assert line == b"* 1 FETCH (FLAGS (\\Recent) EMAILID (" + first + b") UID 1)"  # RFC 3501 §2.3.2
    imap.ok("UID COPY 2 Archive")
    imap.ok("UID MOVE 1 Trash")  # §5.1: MOVE MUST keep the EMAILID
    imap.ok("SELECT Trash")
    assert _fetch_ids(imap, "1:*", b"EMAILID") == [first]
    imap.ok("SELECT Archive")
    assert _fetch_ids(imap, "1:*", b"EMAILID") == [second]


def test_threadid_and_search(imap: Transcript) -> None:
    root = message("plans", extra="Message-ID: <root@example.test>\r\n").replace(
        b"Message-ID: <", b"X-Old-Id: <", 1)
    reply = message("Re: plans", extra="Message-ID: <r1@example.test>\r\nIn-Reply-To: <root@example.test>\r\n"
                    ).replace(b"Message-ID: <", b"X-Old-Id: <", 1)
    deeper = message("Re: Re: plans", extra="Message-ID: <r2@example.test>\r\n"
                     "References: <root@example.test> <r1@example.test>\r\n").replace(
        b"Message-ID: <", b"X-Old-Id: <", 1)
    other = message("other topic", extra="Message-ID: <other@example.test>\r\n").replace(
        b"Message-ID: <", b"X-Old-Id: <", 1)
    anonymous = b"From: a@example.test\r\nSubject: no ids\r\n\r\nbody\r\n"
    for raw in (root, reply, deeper, other, anonymous):
        append(imap, "INBOX", raw)
    imap.ok("SELECT INBOX")
    threads = _fetch_ids(imap, "1:*", b"THREADID")
    assert threads[0] == threads[1] == threads[2]  # one conversation, one id (§5.2)
    assert len({threads[0], threads[3], threads[4]}) == 3
    assert _fetch_ids(imap, "1:*", b"THREADID") == threads  # stable
    emails = _fetch_ids(imap, "1:*", b"EMAILID")
    # §6: the search keys.
    assert imap.ok(f"UID SEARCH THREADID {threads[0].decode()}") == [b"* SEARCH 1 2 3"]
    assert imap.ok(f"SEARCH EMAILID {emails[3].decode()}") == [b"* SEARCH 4"]
    assert imap.ok(f"SEARCH NOT THREADID {threads[0].decode()} EMAILID {emails[4].decode()}") == [b"* SEARCH 5"]
    assert imap.ok("SEARCH EMAILID Mnothing") == [b"* SEARCH"]
    imap.bad("SEARCH EMAILID")
    imap.bad("SEARCH THREADID (x)")
