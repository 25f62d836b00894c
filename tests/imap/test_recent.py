"""The \\Recent flag (RFC 3501 §2.3.2): a new message is recent for exactly one session,
the first told of it; SELECT/EXAMINE's RECENT, STATUS RECENT, SEARCH RECENT/NEW/OLD; COPY,
MOVE and APPEND make the copy recent for the next session; STORE never sets it."""

from __future__ import annotations

from collections.abc import Callable

from tests.imap.conftest import Transcript, append, message


def recent_count(lines: list[bytes]) -> int:
    (line,) = [line for line in lines if line.endswith(b" RECENT")]
    return int(line.split()[1])


def search(s: Transcript, query: str) -> list[int]:
    (line,) = [line for line in s.ok(query) if line.startswith(b"* SEARCH")]
    return [int(n) for n in line.split()[2:]]


def test_exactly_one_session_sees_a_new_message_recent(connect: Callable[..., Transcript]) -> None:
    a, b, c = connect(), connect(), connect()
    assert recent_count(a.ok("SELECT INBOX")) == 0
    assert recent_count(b.ok("SELECT INBOX")) == 0
    append(c, "INBOX", message("new"))  # c has nothing selected
    assert c.ok("STATUS INBOX (RECENT)") == [b"* STATUS INBOX (RECENT 1)"]  # nobody told yet
    # Both selected sessions learn of it; the first to be told holds \Recent.
    assert a.ok("NOOP") == [b"* 1 EXISTS", b"* 1 RECENT"]
    assert b.ok("NOOP") == [b"* 1 EXISTS", b"* 0 RECENT"]
    assert a.ok("FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent))"]
    assert b.ok("FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ())"]
    assert search(a, "SEARCH RECENT") == [1] and search(b, "SEARCH RECENT") == []
    assert search(b, "SEARCH OLD") == [1] and search(a, "SEARCH OLD") == []
    assert c.ok("STATUS INBOX (RECENT)") == [b"* STATUS INBOX (RECENT 0)"]
    assert recent_count(c.ok("SELECT INBOX")) == 0  # already told to a


def test_select_claims_examine_does_not(connect: Callable[..., Transcript]) -> None:
    s, other = connect(), connect()
    s.ok("CREATE Work")
    append(s, "Work", message("one"), "\\Seen")
    append(s, "Work", message("two"))
    assert s.ok("STATUS Work (MESSAGES RECENT)") == [b"* STATUS Work (MESSAGES 2 RECENT 2)"]
    # RFC 3501 §6.3.2: EXAMINE shows them recent and leaves them recent.
    assert recent_count(other.ok("EXAMINE Work")) == 2
    assert other.ok("FETCH 1:2 FLAGS") == [b"* 1 FETCH (FLAGS (\\Recent \\Seen))",
                                           b"* 2 FETCH (FLAGS (\\Recent))"]
    assert s.ok("STATUS Work (RECENT)") == [b"* STATUS Work (RECENT 2)"]
    assert recent_count(s.ok("SELECT Work")) == 2
    assert search(s, "SEARCH RECENT") == [1, 2]
    assert search(s, "SEARCH NEW") == [2]  # RECENT UNSEEN
    assert search(s, "SEARCH OLD") == []
    assert s.ok("SORT (ARRIVAL) UTF-8 RECENT") == [b"* SORT 1 2"]
    # Another session selecting now: nothing is recent for it.
    assert recent_count(other.ok("SELECT Work")) == 0
    assert search(other, "SEARCH RECENT") == [] and search(other, "SEARCH OLD") == [1, 2]
    # Re-selecting gives up the flags too (they belonged to the earlier selection).
    assert recent_count(s.ok("SELECT Work")) == 0


def test_store_keeps_recent_and_cannot_set_it(imap: Transcript) -> None:
    append(imap, "INBOX", message("m"))
    imap.ok("SELECT INBOX")
    assert imap.ok("STORE 1 FLAGS (\\Seen)") == [b"* 1 FETCH (FLAGS (\\Recent \\Seen))"]
    imap.bad("STORE 1 +FLAGS (\\Recent)")  # not a settable flag
    assert imap.ok("STORE 1 -FLAGS (\\Seen)") == [b"* 1 FETCH (FLAGS (\\Recent))"]


def test_copy_move_append_make_recent_for_the_next_session(connect: Callable[..., Transcript]) -> None:
    s, later = connect(), connect()
    assert [append(s, "INBOX", message(f"m{i}")) for i in range(3)] == [1, 2, 3]
    s.ok("SELECT INBOX")
    s.ok("COPY 1 Archive")
    s.ok("MOVE 2 Archive")
    append(s, "Archive", message("appended"))
    assert s.ok("STATUS Archive (MESSAGES RECENT)") == [b"* STATUS Archive (MESSAGES 3 RECENT 3)"]
    assert recent_count(later.ok("SELECT Archive")) == 3
    # APPEND or COPY into the mailbox a session has selected: that session is told first.
    untagged, result = later.command(b"APPEND Archive {5+}\r\nx\r\n\r\n")
    assert result.startswith(b"OK [APPENDUID ") and untagged == [b"* 4 EXISTS", b"* 4 RECENT"]
    untagged, result = later.command("COPY 1 Archive")
    assert result.startswith(b"OK [COPYUID ") and untagged == [b"* 5 EXISTS", b"* 5 RECENT"]
    assert s.ok("STATUS Archive (RECENT)") == [b"* STATUS Archive (RECENT 0)"]
