"""STORE (RFC 3501 §6.4.6) with .SILENT and UNCHANGEDSINCE (RFC 7162 §3.1.3)."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_store_modes(imap: Transcript) -> None:
    for i in range(3):
        append(imap, "INBOX", message(f"m{i}"))
    imap.ok("SELECT INBOX")
    assert b"* 0 RECENT" in imap.ok("SELECT INBOX")  # the first SELECT had the \Recent flags
    # A new keyword: FLAGS and PERMANENTFLAGS name it before any FETCH does (RFC 3501 §7.2.6).
    assert imap.ok("STORE 1:2 +FLAGS (\\Flagged $Work)") == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted",
        b"* 1 FETCH (FLAGS ($Work \\Flagged))", b"* 2 FETCH (FLAGS ($Work \\Flagged))"]
    assert imap.ok("STORE 2 -FLAGS $Work") == [b"* 2 FETCH (FLAGS (\\Flagged))"]
    assert imap.ok("STORE 3 FLAGS.SILENT (\\Seen \\Answered)") == []
    assert imap.ok("UID STORE 3 +FLAGS (\\Seen)") == [b"* 3 FETCH (FLAGS (\\Answered \\Seen) UID 3)"]
    assert imap.ok("FETCH 1:3 FLAGS") == [b"* 1 FETCH (FLAGS ($Work \\Flagged))",
                                          b"* 2 FETCH (FLAGS (\\Flagged))",
                                          b"* 3 FETCH (FLAGS (\\Answered \\Seen))"]
    assert imap.ok("NOOP") == []  # our own changes are not echoed back later
    imap.bad("STORE 4 +FLAGS (\\Seen)")
    imap.bad("STORE 1 +FLAGS (\\Recent)")


def test_unchangedsince(imap: Transcript) -> None:
    append(imap, "INBOX", message("a"))
    append(imap, "INBOX", message("b"))
    imap.ok("SELECT INBOX")  # takes the \Recent flags, which are not this test's subject
    imap.ok("SELECT INBOX (CONDSTORE)")
    modseqs = {}
    for line in imap.ok("FETCH 1:2 (MODSEQ)"):
        seq = int(line.split()[1])
        modseqs[seq] = int(line.split(b"MODSEQ (")[1].split(b")")[0])
    changed = imap.ok(f"STORE 1 (UNCHANGEDSINCE {modseqs[1]}) +FLAGS (\\Seen)")
    assert changed[0].startswith(b"* 1 FETCH (FLAGS (\\Seen) MODSEQ (")
    # message 1 changed since: refused with MODIFIED; message 2 is updated
    untagged, result = imap.command(f"STORE 1:2 (UNCHANGEDSINCE {modseqs[2]}) +FLAGS (\\Flagged)")
    assert result.startswith(b"OK [MODIFIED 1]")
    assert len(untagged) == 1 and untagged[0].startswith(b"* 2 FETCH (FLAGS (\\Flagged) MODSEQ (")
