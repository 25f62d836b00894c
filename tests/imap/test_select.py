"""SELECT / EXAMINE (RFC 3501 §6.3.1-2, RFC 7162 CONDSTORE), UNSELECT (RFC 3691), CLOSE."""

from __future__ import annotations

from collections.abc import Callable

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


def test_keywords_announced(connect: Callable[..., Transcript]) -> None:
    """RFC 3501 §7.2.6, §7.1: FLAGS and PERMANENTFLAGS name the mailbox's keywords at
    SELECT, and a new FLAGS comes before any FETCH naming a keyword not yet announced."""
    s, other = connect(), connect()
    append(s, "INBOX", message("k1"), "$Label1 \\Seen")
    append(s, "INBOX", message("k2"))
    lines = s.ok("SELECT INBOX")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1)" in lines
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 \\*)] Flags permitted" in lines
    assert b"* OK [PERMANENTFLAGS ()] Flags permitted" in other.ok("EXAMINE INBOX")
    # Another session sets a keyword this one has not been told of: FLAGS first.
    writer = other
    writer.ok("SELECT INBOX")
    writer.ok("STORE 2 +FLAGS.SILENT (Work)")
    assert s.ok("NOOP") == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Work \\*)] Flags permitted",
        b"* 2 FETCH (FLAGS (Work \\Recent) UID 2)"]
    assert s.ok("FETCH 2 FLAGS") == [b"* 2 FETCH (FLAGS (Work \\Recent))"]  # announced once
    # A message appended with a new keyword: FLAGS before the FETCH that shows it.
    append(writer, "INBOX", message("k3"), "Fresh")
    assert s.ok("NOOP") == [b"* 3 EXISTS", b"* 2 RECENT"]  # 3 is the writer's \Recent, not ours
    lines = s.ok("FETCH 1:* FLAGS")
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 Fresh Work)"
    assert lines[-1] == b"* 3 FETCH (FLAGS (Fresh))"
    assert b"$Label1 Fresh Work)" in [line for line in s.ok("SELECT INBOX") if line.startswith(b"* FLAGS")][0]


def test_sessions_sharing_a_sequence_map_change_their_own(connect: Callable[..., Transcript]) -> None:
    """SELECT hands each session the store's index array, shared until the session's map
    changes: one session told of an expunge and a new message changes its own map only,
    neither another session's (told later, in its turn) nor the store's (a new SELECT)."""
    first = connect()
    uids = [append(first, "INBOX", message(f"m{n}")) for n in range(4)]
    a, b, other = connect(), connect(), connect()
    for s in (a, b, other):
        s.ok("SELECT INBOX")
    other.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    newest = append(other, "INBOX", message("m4"))
    told = a.ok("NOOP")
    assert b"* 2 EXPUNGE" in told and b"* 4 EXISTS" in told
    assert a.ok("UID SEARCH ALL") == [b"* SEARCH " + " ".join(map(str, [uids[0], *uids[2:], newest])).encode()]
    fetched = b.ok("FETCH 4 (UID)")  # b's map is as it was; the new message may be told now
    assert fetched[0] == b"* 4 FETCH (UID %d)" % uids[3] and b"* 5 EXISTS" in fetched
    assert b"* 2 EXPUNGE" in b.ok("NOOP")  # an EXPUNGE waits for a command that allows it
    fresh = connect()
    assert b"* 4 EXISTS" in fresh.ok("SELECT INBOX")
    assert fresh.ok("UID SEARCH ALL") == a.ok("UID SEARCH ALL") == b.ok("UID SEARCH ALL")


def test_a_kept_select_answer_follows_every_change_of_the_mailbox(connect: Callable[..., Transcript]) -> None:
    """SELECT's responses are kept per version of the mailbox (server.py invariant 15):
    each change another session makes shows in the next SELECT."""
    me, other = connect(), connect()
    append(other, "INBOX", message("one"))
    append(other, "INBOX", message("two"))

    def select(name: str = "INBOX") -> dict[str, bytes]:
        lines = me.ok(f"SELECT {name}")
        found = {}
        for line in lines:
            for word in (b"EXISTS", b"UNSEEN", b"UIDNEXT", b"HIGHESTMODSEQ", b"UIDVALIDITY", b"MAILBOXID"):
                if word in line:
                    found[word.decode()] = line
            if line.startswith(b"* FLAGS "):
                found["FLAGS"] = line
        return found

    first = select()
    assert first == select()  # nothing changed: the same answer
    other.ok("SELECT INBOX")
    other.ok("STORE 1 +FLAGS.SILENT (\\Seen)")  # the first unseen is now message 2
    after_seen = select()
    assert after_seen["UNSEEN"] == b"* OK [UNSEEN 2] First unseen"
    assert after_seen["HIGHESTMODSEQ"] != first["HIGHESTMODSEQ"]
    other.ok("STORE 2 +FLAGS.SILENT ($Project)")  # a new keyword: in FLAGS (RFC 3501 §7.2.6)
    assert b"$Project" in select()["FLAGS"] and b"$Project" not in after_seen["FLAGS"]
    append(other, "INBOX", message("three"))
    after_append = select()
    assert after_append["EXISTS"] == b"* 3 EXISTS"
    assert after_append["UIDNEXT"] == b"* OK [UIDNEXT 4] Predicted next UID"
    other.ok("CREATE Work")
    work = select("Work")
    other.ok("RENAME Work Play")  # the same mailbox under a new name
    me.no("SELECT Work", code="NONEXISTENT")
    play = select("Play")
    assert (play["UIDVALIDITY"], play["MAILBOXID"]) == (work["UIDVALIDITY"], work["MAILBOXID"])
    other.ok("DELETE Play")
    other.ok("CREATE Play")  # a new mailbox of the old name: a new answer
    assert select("Play")["MAILBOXID"] != play["MAILBOXID"]
