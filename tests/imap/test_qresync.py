"""QRESYNC (RFC 7162 §3.2): ENABLE, SELECT with what the client knew, VANISHED instead of
EXPUNGE, UID FETCH (CHANGEDSINCE n VANISHED), [CLOSED]."""

from __future__ import annotations

from collections.abc import Callable

from tests.imap.conftest import Transcript, append, message


def highest(lines: list[bytes]) -> int:
    (line,) = [line for line in lines if b"[HIGHESTMODSEQ " in line]
    return int(line.split(b"[HIGHESTMODSEQ ")[1].split(b"]")[0])


def uidvalidity(lines: list[bytes]) -> int:
    (line,) = [line for line in lines if b"[UIDVALIDITY " in line]
    return int(line.split(b"[UIDVALIDITY ")[1].split(b"]")[0])


def changes_while_away(connect: Callable[..., Transcript]) -> tuple[Transcript, int, int]:
    """Five messages; a client's session learns the mailbox at modseq m, then another
    session expunges uids 2 and 4, flags 3 and appends 6. The returned session has
    QRESYNC enabled and no mailbox selected; (session, uidvalidity, m)."""
    other = connect()
    for n in range(5):
        append(other, "INBOX", message(f"m{n}"))
    lines = other.ok("SELECT INBOX")
    known, validity = highest(lines), uidvalidity(lines)
    other.ok("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
    other.ok("EXPUNGE")
    other.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")  # uid 3, now message 2
    append(other, "INBOX", message("m5"))
    client = connect()
    assert client.ok("ENABLE QRESYNC") == [b"* ENABLED QRESYNC"]
    return client, validity, known


def test_select_reports_what_changed_since(connect: Callable[..., Transcript]) -> None:
    client, validity, known = changes_while_away(connect)
    lines = client.ok(f"SELECT INBOX (QRESYNC ({validity} {known}))")
    assert b"* VANISHED (EARLIER) 2,4" in lines
    fetches = [line for line in lines if b" FETCH " in line]
    assert [f.split(b" UID ")[1].split()[0] for f in fetches] == [b"3", b"6"]
    assert fetches[0].startswith(b"* 2 FETCH (FLAGS (\\Flagged) UID 3 MODSEQ (")
    assert lines.index(b"* VANISHED (EARLIER) 2,4") < lines.index(fetches[0])


def test_known_uids_narrow_vanished(connect: Callable[..., Transcript]) -> None:
    client, validity, known = changes_while_away(connect)
    lines = client.ok(f"EXAMINE INBOX (QRESYNC ({validity} {known} 1:3 (1:3 1:3)))")
    assert b"* VANISHED (EARLIER) 2" in lines


def test_another_uidvalidity_is_an_ordinary_select(connect: Callable[..., Transcript]) -> None:
    client, validity, known = changes_while_away(connect)
    lines = client.ok(f"SELECT INBOX (QRESYNC ({validity + 1} {known}))")
    assert not [line for line in lines if line.startswith(b"* VANISHED") or b" FETCH " in line]
    assert b"* 4 EXISTS" in lines


def test_vanished_replaces_expunge(connect: Callable[..., Transcript]) -> None:
    client, _, _ = changes_while_away(connect)
    client.ok("SELECT INBOX")
    client.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
    untagged, tagged = client.command("EXPUNGE")
    assert untagged == [b"* VANISHED 1"]
    # RFC 7162 §3.2.7: the expunge's mod-sequence, the mailbox's highest now.
    status = connect().ok("STATUS INBOX (HIGHESTMODSEQ)")[0]
    assert tagged.startswith(b"OK [HIGHESTMODSEQ %s] " % status.split(b"HIGHESTMODSEQ ")[1].rstrip(b")"))
    _, tagged = client.command("UID EXPUNGE 1:*")  # nothing expunged, no mod-sequence to tell
    assert b"HIGHESTMODSEQ" not in tagged
    other = connect()
    other.ok("SELECT INBOX")
    other.ok("UID MOVE 5:6 Trash")
    assert b"* VANISHED 5:6" in client.ok("NOOP")
    plain = connect()  # a session without QRESYNC still hears EXPUNGE
    plain.ok("SELECT INBOX")
    plain.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert plain.ok("EXPUNGE") == [b"* 1 EXPUNGE"]


def test_uid_fetch_vanished(connect: Callable[..., Transcript]) -> None:
    client, _, known = changes_while_away(connect)
    client.ok("SELECT INBOX")
    lines = client.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 2,4"
    assert len(lines) == 3 and all(b" FETCH (" in line for line in lines[1:])
    assert client.ok(f"UID FETCH 3:10 (FLAGS) (CHANGEDSINCE {known} VANISHED)")[0] == b"* VANISHED (EARLIER) 4"
    assert client.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1000000000 VANISHED)") == []
    client.bad(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {known} VANISHED)")  # UID FETCH only
    client.bad("UID FETCH 1:* (FLAGS) (VANISHED)")  # with CHANGEDSINCE only


def test_qresync_needs_enable(connect: Callable[..., Transcript]) -> None:
    client = connect()
    append(client, "INBOX", message("a"))
    client.bad("SELECT INBOX (QRESYNC (1 1))")
    client.ok("SELECT INBOX")
    client.bad("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert b"QRESYNC" in client.ok("CAPABILITY")[0].split()


def test_closed_on_reselect(imap: Transcript) -> None:
    imap.ok("SELECT INBOX")
    lines = imap.ok("EXAMINE Trash")
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"  # RFC 7162 §3.2.11


def test_every_fetch_response_carries_the_uid(connect: Callable[..., Transcript]) -> None:
    """RFC 7162 §3.2.4: once QRESYNC is enabled every untagged FETCH has UID (and, CONDSTORE
    being on, MODSEQ where a flag changed): STORE .SILENT, plain FETCH, other sessions'
    flag changes."""
    s, other = connect(), connect()
    for n in range(2):
        append(s, "INBOX", message(f"q{n}"))
    s.ok("ENABLE QRESYNC")
    s.ok("SELECT INBOX")
    silent = s.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")
    assert len(silent) == 1 and silent[0].startswith(b"* 2 FETCH (UID 2 MODSEQ (")
    loud = s.ok("STORE 1 +FLAGS (\\Seen)")
    assert len(loud) == 1 and loud[0].startswith(b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 1 MODSEQ (")
    assert s.ok("FETCH 1 (FLAGS)") == [b"* 1 FETCH (UID 1 FLAGS (\\Recent \\Seen))"]
    assert s.ok("FETCH 2 RFC822.SIZE")[0].startswith(b"* 2 FETCH (UID 2 RFC822.SIZE ")
    other.ok("SELECT INBOX")
    other.ok("STORE 1 -FLAGS.SILENT (\\Seen)")
    (update,) = [line for line in s.ok("NOOP") if b"FETCH" in line]
    assert update.startswith(b"* 1 FETCH (FLAGS (\\Recent) UID 1 MODSEQ (")
