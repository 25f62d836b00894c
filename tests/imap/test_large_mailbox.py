"""What the read paths of a large mailbox keep between commands (the store's mailbox index,
the kept FETCH lines, cached SORT keys) is never stale: each answer below follows a change
made by another session, or by another process over the same data directory, since the
cache was filled."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.imap.conftest import Transcript, append, message


def _dated(subject: str, day: int) -> bytes:
    return message(subject).replace(b"Mon, 1 Jan 2024", f"Mon, {day} Jan 2024".encode())


def _status(s: Transcript) -> bytes:
    return [line for line in s.ok("STATUS INBOX (MESSAGES UNSEEN DELETED UIDNEXT)") if b"STATUS" in line][0]


def test_sort_status_and_expunge_follow_another_session(connect: Callable[..., Transcript]) -> None:
    s, other = connect(), connect()
    for day in (3, 1, 5):
        append(s, "INBOX", _dated(f"day {day}", day))
    s.ok("ENABLE IMAP4rev2")  # STATUS (DELETED) in either protocol; no \Recent to mind
    s.ok("SELECT INBOX")
    assert s.ok("UID SORT (DATE) UTF-8 ALL") == [b"* SORT 2 1 3"]
    assert s.ok("UID SORT (DATE) UTF-8 ALL") == [b"* SORT 2 1 3"]  # keys cached now
    assert b"MESSAGES 3 UNSEEN 3 DELETED 0 UIDNEXT 4" in _status(s)
    append(other, "INBOX", _dated("day 2", 2))
    other.ok("SELECT INBOX")
    other.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted \\Seen)")
    s.ok("NOOP")
    assert s.ok("UID SORT (DATE) UTF-8 ALL") == [b"* SORT 2 4 1 3"]
    assert s.ok("SORT (REVERSE DATE) UTF-8 ALL") == [b"* SORT 3 1 4 2"]
    assert b"MESSAGES 4 UNSEEN 3 DELETED 1 UIDNEXT 5" in _status(s)
    # EXPUNGE finds the \Deleted message from the index, as another session left it.
    lines = s.ok("EXPUNGE")
    assert b"* 3 EXPUNGE" in lines or b"* VANISHED 3" in lines
    assert b"MESSAGES 3 UNSEEN 3 DELETED 0 UIDNEXT 5" in _status(s)
    other.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    s.ok("CLOSE")  # expunges silently what is \Deleted now
    s.ok("SELECT INBOX")
    assert s.ok("UID SORT (DATE) UTF-8 ALL") == [b"* SORT 2 4"]


def test_select_and_status_see_another_process(imap_server: Any, connect: Callable[..., Transcript],
                                               account: Any) -> None:
    """Another process appends and expunges: this one was told nothing, and its next
    SELECT and STATUS read the mailbox as it is (the index is checked against the mailbox
    record at every read)."""
    s = connect()
    for n in range(4):
        append(s, "INBOX", message(f"m{n}"))
    s.ok("SELECT INBOX")
    s.ok("FETCH 1:* (UID FLAGS)")
    script = ("from pathlib import Path; from maild import config; from maild.store import Store; "
              "from maild.store.types import FlagMode; "
              f"c = config.load(Path({str(imap_server.config_path)!r})); s = Store(c.data_dir, c.store); "
              f"box = s.require_mailbox({account.address!r}, 'INBOX'); "
              f"s.append({account.address!r}, box.id, b'Subject: other\\r\\n\\r\\nbody\\r\\n'); "
              f"s.set_flags({account.address!r}, box.id, [2], {{'\\\\Deleted'}}, FlagMode.ADD); "
              f"s.expunge({account.address!r}, box.id, [2]); s.close()")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2], timeout=60)
    lines = s.ok("SELECT INBOX")
    assert b"* 4 EXISTS" in lines and b"* OK [UIDNEXT 6] Predicted next UID" in lines
    assert s.ok("UID SEARCH ALL") == [b"* SEARCH 1 3 4 5"]
    fetched = [line for line in s.ok("FETCH 1:* (UID FLAGS)") if b" FETCH (" in line]
    assert [line.split(b" FLAGS")[0] for line in fetched] == [
        b"* 1 FETCH (UID 1", b"* 2 FETCH (UID 3", b"* 3 FETCH (UID 4", b"* 4 FETCH (UID 5"]
    status = [line for line in s.ok("STATUS INBOX (MESSAGES UIDNEXT)") if b"STATUS" in line][0]
    assert b"MESSAGES 4 UIDNEXT 6" in status
