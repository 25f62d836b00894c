"""Two sessions on one mailbox (RFC 3501 §5.2, §7.4.1): updates arrive at allowed moments."""

from __future__ import annotations

from collections.abc import Callable

from tests.imap.conftest import Transcript, append, message


def test_no_expunge_during_fetch_store_search(connect: Callable[..., Transcript]) -> None:
    reader, writer = connect(), connect()
    for i in range(3):
        append(writer, "INBOX", message(f"n{i}"))
    reader.ok("SELECT INBOX")
    writer.ok("SELECT INBOX")
    writer.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
    writer.ok("EXPUNGE")
    # The reader keeps its numbering during FETCH, STORE and SEARCH: no EXPUNGE yet. The
    # message expunged meanwhile is left out, and a NO says so (RFC 2180 §4.1.3).
    lines, result = reader.command("FETCH 1:3 (UID)")
    assert result.startswith(b"NO [EXPUNGEISSUED] ")
    assert lines == [b"* 1 FETCH (UID 1)", b"* 3 FETCH (UID 3)"]
    assert not any(b"EXPUNGE" in line for line in lines)
    assert not any(b"EXPUNGE" in line for line in reader.ok("STORE 3 +FLAGS (\\Seen)"))
    assert not any(b"EXPUNGE" in line for line in reader.ok("SEARCH ALL"))
    # the flag change from the other session arrives as FETCH FLAGS
    assert reader.ok("NOOP") == [b"* 2 EXPUNGE"]
    assert reader.ok("FETCH 2 UID") == [b"* 2 FETCH (UID 3)"]
    writer.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
    append(writer, "INBOX", message("new"))
    lines = reader.ok("UID FETCH 1 FLAGS")  # UID FETCH may carry untagged updates
    assert b"* 3 EXISTS" in lines
    # Selected first, the reader holds \Recent of 1 to 3; the writer, selected when it
    # appended, holds the new one's (RFC 3501 §2.3.2).
    assert lines[0] == b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)"
    assert b"* 2 RECENT" in lines


def test_other_session_deletes_selected_mailbox(connect: Callable[..., Transcript]) -> None:
    a, b = connect(), connect()
    a.ok("CREATE Temp")
    a.ok("SELECT Temp")
    b.ok("DELETE Temp")
    a.send("x NOOP")
    assert a.line().startswith(b"* BYE")
