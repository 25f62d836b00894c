"""CONDSTORE (RFC 7162): FETCH ... (CHANGEDSINCE n) reports exactly the messages of the set
whose mod-sequence is above n, as the server knew them at the command."""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.imap.conftest import Transcript, append, message


def _modseqs(lines: list[bytes]) -> dict[int, int]:
    """uid -> MODSEQ from untagged FETCH lines."""
    out = {}
    for line in lines:
        uid, modseq = re.search(rb"UID (\d+)", line), re.search(rb"MODSEQ \((\d+)\)", line)
        if uid and modseq:
            out[int(uid.group(1))] = int(modseq.group(1))
    return out


def test_changedsince_reports_only_changed_messages_of_the_set(imap: Transcript) -> None:
    for n in range(6):
        append(imap, "INBOX", message(f"m{n}"))
    imap.ok("SELECT INBOX")  # takes the \Recent flags, which are not this test's subject
    imap.ok("SELECT INBOX (CONDSTORE)")
    before = _modseqs(imap.ok("UID FETCH 1:* (MODSEQ)"))
    assert sorted(before) == [1, 2, 3, 4, 5, 6]
    mark = max(before.values())
    imap.ok("UID STORE 2,5 +FLAGS.SILENT (\\Flagged)")
    changed = imap.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark})")
    assert sorted(_modseqs(changed)) == [2, 5]
    assert all(b"\\Flagged" in line for line in changed)
    # The set still limits the answer; sequence numbers are those of the session.
    assert sorted(_modseqs(imap.ok(f"UID FETCH 1:4 (FLAGS) (CHANGEDSINCE {mark})"))) == [2]
    assert imap.ok(f"FETCH 5 (FLAGS) (CHANGEDSINCE {mark})")[0].startswith(b"* 5 FETCH (FLAGS (\\Flagged) MODSEQ (")
    # A value at or above every message's mod-sequence: nothing.
    assert imap.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark + 1000})") == []
    # 0: everything (every mod-sequence is at least 1).
    assert sorted(_modseqs(imap.ok("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 0)"))) == [1, 2, 3, 4, 5, 6]


def test_changedsince_leaves_out_what_the_session_has_not_been_told(connect: Callable[..., Transcript]) -> None:
    s = connect()
    for n in range(3):
        append(s, "INBOX", message(f"m{n}"))
    s.ok("SELECT INBOX")  # takes the \Recent flags, which are not this test's subject
    s.ok("SELECT INBOX (CONDSTORE)")
    mark = max(_modseqs(s.ok("UID FETCH 1:* (MODSEQ)")).values())
    other = connect()
    other.ok("SELECT INBOX")
    other.ok("UID STORE 1 +FLAGS.SILENT (\\Seen)")
    other.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    other.ok("UID EXPUNGE 3")
    append(other, "INBOX", message("new"))  # uid 4, changed after mark but not yet announced
    untagged = s.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {mark})")
    # The answer covers the session's view: uid 1 changed; uid 3 is gone from the store and
    # uid 4 not yet announced. The expunge, the new message and uid 1's new flags follow
    # as announcements after it.
    assert untagged[0].startswith(b"* 1 FETCH (FLAGS (\\Seen) UID 1 MODSEQ (")
    assert untagged[1:3] == [b"* 3 EXPUNGE", b"* 3 EXISTS"]
    assert sorted(_modseqs(untagged)) == [1]


def test_first_enabling_command_reports_highestmodseq(imap: Transcript) -> None:
    """RFC 7162 §3.1: the first CONDSTORE-enabling command while a mailbox is selected is
    answered with `* OK [HIGHESTMODSEQ n]` too; later ones are not."""
    append(imap, "INBOX", message("a"))
    append(imap, "INBOX", message("b"))
    imap.ok("SELECT INBOX")
    lines = imap.ok("FETCH 1 (MODSEQ)")
    assert lines == [b"* OK [HIGHESTMODSEQ 3] Highest", b"* 1 FETCH (MODSEQ (2))"]
    assert imap.ok("FETCH 2 (MODSEQ)") == [b"* 2 FETCH (MODSEQ (3))"]
