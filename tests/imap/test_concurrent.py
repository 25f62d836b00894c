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
    # The reader keeps its numbering during FETCH, STORE and SEARCH: no EXPUNGE yet.
    lines = reader.ok("FETCH 1:3 (UID)")
    assert b"* 1 FETCH (UID 1)" in lines and b"* 3 FETCH (UID 3)" in lines
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
    assert lines[0] == b"* 1 FETCH (FLAGS (\\Flagged) UID 1)"


def test_other_session_deletes_selected_mailbox(connect: Callable[..., Transcript]) -> None:
    a, b = connect(), connect()
    a.ok("CREATE Temp")
    a.ok("SELECT Temp")
    b.ok("DELETE Temp")
    a.send("x NOOP")
    assert a.line().startswith(b"* BYE")
