"""CONTEXT=SEARCH (RFC 5267 §4): SEARCH RETURN (PARTIAL lo:hi) (§4.4), the CONTEXT hint
(§4.2), and RETURN (UPDATE) contexts kept up to date with ADDTO / REMOVEFROM (§4.3), ended
by CANCELUPDATE (§4.3.5) or leaving the mailbox; NOUPDATE when refused (§4.3.1)."""

from __future__ import annotations

from collections.abc import Callable

from maild.imap.context import MAX_CONTEXTS
from tests.imap.conftest import Transcript, append, message


def _esearch(imap: Transcript, command: str) -> list[bytes]:
    """The untagged answer of ``command``, with this command's tag written as TAG."""
    lines = imap.ok(command)
    return [line.replace(f'(TAG "t{imap.counter}")'.encode(), b"(TAG)") for line in lines]


def test_partial_and_context_hint(imap: Transcript) -> None:
    assert b"CONTEXT=SEARCH" in imap.ok("CAPABILITY")[0].split()
    for i in range(10):
        append(imap, "INBOX", message(f"m{i}"), flags="\\Seen" if i % 2 else "")
    imap.ok("SELECT INBOX")
    assert _esearch(imap, "SEARCH RETURN (PARTIAL 2:3) ALL") == [b"* ESEARCH (TAG) PARTIAL (2:3 2:3)"]
    assert _esearch(imap, "UID SEARCH RETURN (COUNT PARTIAL 4:2) SEEN") == [
        b"* ESEARCH (TAG) UID COUNT 5 PARTIAL (2:4 4,6,8)"]  # 500:400 is 400:500 (§5)
    assert _esearch(imap, "SEARCH RETURN (PARTIAL 20:30) ALL") == [b"* ESEARCH (TAG) PARTIAL (20:30 NIL)"]
    assert _esearch(imap, "SEARCH RETURN (CONTEXT COUNT) UNSEEN") == [b"* ESEARCH (TAG) COUNT 5"]
    imap.bad("SEARCH RETURN (PARTIAL 1:5 ALL) ALL")  # §4.4: one of PARTIAL and ALL
    imap.bad("SEARCH RETURN (PARTIAL 1:*) ALL")
    imap.bad("SEARCH RETURN (PARTIAL 0:5) ALL")
    assert b"CONTEXT=SORT" in imap.ok("CAPABILITY")[0].split()
    assert _esearch(imap, "SORT RETURN (COUNT PARTIAL 1:3) (REVERSE ARRIVAL) UTF-8 SEEN") == [
        b"* ESEARCH (TAG) COUNT 5 PARTIAL (1:3 10,8,6)"]  # PARTIAL in sort order
    imap.bad("SORT RETURN (ALL PARTIAL 1:3) (ARRIVAL) UTF-8 ALL")


def test_update_follows_changes(connect: Callable[..., Transcript]) -> None:
    imap = connect()
    other = connect()
    for i in range(4):
        append(imap, "INBOX", message(f"u{i}"))
    imap.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    imap.send('B01 UID SEARCH RETURN (UPDATE COUNT) DELETED')
    assert imap.collect("B01") == ([b'* ESEARCH (TAG "B01") UID COUNT 0'], b"OK UID SEARCH completed")
    imap.send('B02 SEARCH RETURN (UPDATE) UNDELETED')
    assert imap.collect("B02") == ([b'* ESEARCH (TAG "B02")'], b"OK SEARCH completed")
    # Another session flags two messages \Deleted: both contexts change at our next command.
    other.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
    lines = imap.ok("NOOP")
    assert b'* ESEARCH (TAG "B01") UID ADDTO (0 2:3)' in lines
    assert b'* ESEARCH (TAG "B02") REMOVEFROM (0 2:3)' in lines
    # Our own change, a new message, and an expunge (REMOVEFROM before the EXPUNGE, §4.3.4).
    imap.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
    append(other, "INBOX", message("new"))
    lines = imap.ok("NOOP")
    assert b'* ESEARCH (TAG "B01") UID ADDTO (0 4)' in lines
    assert b'* ESEARCH (TAG "B02") REMOVEFROM (0 4)' in lines
    assert lines.index(b"* 5 EXISTS") < lines.index(b'* ESEARCH (TAG "B02") ADDTO (0 5)')  # §4.3.3
    other.ok("EXPUNGE")
    lines = imap.ok("NOOP")
    assert lines[:3] == [b'* ESEARCH (TAG "B01") UID REMOVEFROM (0 2:4)', b"* 4 EXPUNGE", b"* 3 EXPUNGE"]
    assert lines[3:] == [b"* 2 EXPUNGE"]
    # A reused tag is BAD (§4.3); CANCELUPDATE ends the updates (§4.3.5).
    imap.send('B01 SEARCH RETURN (UPDATE) ALL')
    assert imap.collect("B01")[1].startswith(b"BAD")
    imap.ok('CANCELUPDATE "B01" "B02"')
    other.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    # Message 1 is this session's \Recent (its SELECT was the first, RFC 3501 §2.3.2).
    assert imap.ok("NOOP") == [b"* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)"]  # and no ESEARCH


def test_update_during_idle_and_limits(connect: Callable[..., Transcript]) -> None:
    imap = connect()
    other = connect()
    append(imap, "INBOX", message("a"))
    imap.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    imap.send("C01 UID SEARCH RETURN (UPDATE) FLAGGED")
    assert imap.collect("C01")[1].startswith(b"OK")
    imap.send("i IDLE")
    assert imap.line().startswith(b"+ ")
    other.ok("STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert imap.line() == b"* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)"  # \Recent: ours since SELECT
    assert imap.line() == b'* ESEARCH (TAG "C01") UID ADDTO (0 1)'  # §4.3.2: during IDLE too
    imap.send("DONE")
    imap.collect("i")
    # Searches that read message text are not kept up to date, nor more than MAX_CONTEXTS.
    untagged, result = imap.command('SEARCH RETURN (UPDATE COUNT) BODY "hello"')
    assert untagged[-1].startswith(b'* NO [NOUPDATE "t') and result.startswith(b"OK")
    for _ in range(MAX_CONTEXTS - 1):
        assert _esearch(imap, "SEARCH RETURN (UPDATE) ALL") == [b"* ESEARCH (TAG)"]
    untagged, _ = imap.command("SEARCH RETURN (UPDATE) ALL")
    assert untagged[-1] == f'* NO [NOUPDATE "t{imap.counter}"] Not updating this search'.encode()
    # Leaving the mailbox drops every context.
    imap.ok("SELECT INBOX")
    other.ok("STORE 1 -FLAGS.SILENT (\\Flagged)")
    assert not [line for line in imap.ok("NOOP") if b"ESEARCH" in line]


def test_sort_update_positions(connect: Callable[..., Transcript]) -> None:
    """CONTEXT=SORT: updates carry the positions in sort order (§4.3.3, §4.3.4)."""
    imap = connect()
    other = connect()
    append(imap, "INBOX", message("b"))
    append(imap, "INBOX", message("d"))
    imap.ok("SELECT INBOX")
    other.ok("SELECT INBOX")
    imap.send("S1 UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNDELETED")
    assert imap.collect("S1") == ([b'* ESEARCH (TAG "S1") UID ALL 1:2'], b"OK UID SORT completed")
    imap.send("S2 SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 ALL")
    assert imap.collect("S2")[1].startswith(b"OK")
    append(other, "INBOX", message("a"))  # uid 3
    append(other, "INBOX", message("c"))  # uid 4
    lines = imap.ok("NOOP")
    # The new messages are the appending session's \Recent (selected there); 1 and 2 stay
    # ours. EXISTS (and its RECENT, RFC 3501 §7.3.2) before the ADDTOs (RFC 5267 §4.3.3).
    assert lines[:2] == [b"* 4 EXISTS", b"* 2 RECENT"]
    # S1 was [1 b, 2 d], now [3 a, 1 b, 4 c, 2 d]; S2 was [2 d, 1 b], now [2 d, 4 c, 1 b, 3 a].
    assert lines[2:] == [b'* ESEARCH (TAG "S1") UID ADDTO (1 3 3 4)', b'* ESEARCH (TAG "S2") ADDTO (2 4 4 3)']
    other.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert imap.ok("NOOP")[1:] == [b'* ESEARCH (TAG "S1") UID REMOVEFROM (2 1)']
    other.ok("EXPUNGE")  # uid 1, sequence number 1: position 3 in S2 (REVERSE SUBJECT)
    assert imap.ok("NOOP") == [b'* ESEARCH (TAG "S2") REMOVEFROM (3 1)', b"* 1 EXPUNGE"]
    assert imap.ok("UID SORT (SUBJECT) UTF-8 ALL") == [b"* SORT 3 4 2"]


def test_update_of_recent_keys(connect: Callable[..., Transcript]) -> None:
    """RECENT, NEW and OLD (RFC 3501 §6.4.4) in an UPDATE context follow this session's
    \\Recent (§2.3.2): the messages it claims join, and no other change drops them."""
    imap = connect()
    writer = connect()
    append(imap, "INBOX", message("before"))
    imap.ok("SELECT INBOX")  # 1 is ours
    imap.send("N1 SEARCH RETURN (UPDATE ALL) NEW")
    assert imap.collect("N1") == ([b'* ESEARCH (TAG "N1") ALL 1'], b"OK SEARCH completed")
    imap.send("N2 UID SEARCH RETURN (UPDATE ALL) OLD")
    assert imap.collect("N2") == ([b'* ESEARCH (TAG "N2") UID'], b"OK UID SEARCH completed")
    append(writer, "INBOX", message("after"))  # not selected there: ours when we are told
    lines = imap.ok("NOOP")
    assert lines == [b"* 2 EXISTS", b"* 2 RECENT", b'* ESEARCH (TAG "N1") ADDTO (0 2)']
    # A flag change re-runs the searches; the recent messages stay where they are.
    writer.ok("SELECT INBOX")  # claims nothing: both were ours already
    writer.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
    lines = imap.ok("NOOP")
    assert lines == [b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 1)", b'* ESEARCH (TAG "N1") REMOVEFROM (0 1)']
    # A third message, told first to the writer (selected now): OLD here.
    append(writer, "INBOX", message("theirs"))
    lines = imap.ok("NOOP")
    assert lines == [b"* 3 EXISTS", b"* 2 RECENT", b'* ESEARCH (TAG "N2") UID ADDTO (0 3)']
