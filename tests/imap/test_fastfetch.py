"""maild.imap.fastfetch: the flag resync and the header fetch of a whole folder, answered from
the store's packed mailbox index and the kept lines, say exactly what the general FETCH
path says, and follow every change: this session's, another session's, and another process
writing the same data directory."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.imap.conftest import Transcript, append, message

# INTERNALDATE is not a column of the fast path: a FETCH that asks for it takes the
# general path, and without it the two answers must be the same bytes.
_DATE = re.compile(rb' INTERNALDATE "[^"]*"')
HEADERS = "BODY.PEEK[HEADER.FIELDS (From Subject Message-ID X-Missing)]"


def _both(s: Transcript, items: str, sequence: str = "1:*", uid: bool = False) -> tuple[bytes, bytes]:
    prefix = "UID FETCH" if uid else "FETCH"
    fast = b"\n".join(s.ok(f"{prefix} {sequence} ({items})"))
    general = _DATE.sub(b"", b"\n".join(s.ok(f"{prefix} {sequence} ({items} INTERNALDATE)")))
    return fast, general


def _fill(s: Transcript, count: int = 8) -> None:
    for n in range(count):
        flags = ["", "\\Seen", "\\Seen \\Flagged", "$Label1", "\\Draft $Work"][n % 5]
        append(s, "INBOX", message(f"m{n}", body=f"body {n}"), flags)


def test_same_bytes_as_the_general_path(connect: Callable[..., Transcript]) -> None:
    s = connect()
    _fill(s)
    s.ok("EXAMINE INBOX")  # \Recent stays with the messages: EXAMINE shows it
    s.ok("FETCH 1 (MODSEQ)")  # enables CONDSTORE (its HIGHESTMODSEQ line is not compared)
    for items in ("UID FLAGS", "FLAGS UID", "FLAGS", "UID RFC822.SIZE FLAGS", "UID MODSEQ FLAGS",
                  f"UID RFC822.SIZE FLAGS {HEADERS}", f"{HEADERS} FLAGS", "BODY.PEEK[HEADER]"):
        for sequence in ("1:*", "2:4", "1,3,7", "*"):
            fast, general = _both(s, items, sequence)
            assert fast == general, (items, sequence)
            assert fast.count(b" FETCH (") == {"1:*": 8, "2:4": 3, "1,3,7": 3, "*": 1}[sequence]
    assert b"\\Recent" in _both(s, "UID FLAGS")[0]
    s.ok("SELECT INBOX")  # claims \Recent
    s.ok("SELECT INBOX")  # and now nothing is \Recent here
    for items in ("UID FLAGS", f"UID RFC822.SIZE FLAGS {HEADERS}"):
        fast, general = _both(s, items)
        assert fast == general and b"\\Recent" not in fast
        assert _both(s, items, "3:6", uid=True)[0] == _both(s, items, "3:6", uid=True)[1]
    fast, _ = _both(s, "UID FLAGS")
    assert fast.split(b"\n")[3] == b"* 4 FETCH (UID 4 FLAGS ($Label1))"


def test_answers_follow_this_and_other_sessions_changes(connect: Callable[..., Transcript]) -> None:
    s, other = connect(), connect()
    _fill(s, 5)
    s.ok("SELECT INBOX")  # claims \Recent
    s.ok("SELECT INBOX")
    first = s.ok("FETCH 1:* (UID FLAGS)")
    assert s.ok("FETCH 1:* (UID FLAGS)") == first  # kept lines
    other.ok("SELECT INBOX")
    other.ok("UID STORE 2 +FLAGS.SILENT (\\Answered)")
    # The changed message's new flags (and its announcement after the answer).
    lines = s.ok("FETCH 1:* (UID FLAGS)")
    assert lines[1] == b"* 2 FETCH (UID 2 FLAGS (\\Answered \\Seen))"
    assert lines[:5] != first
    append(other, "INBOX", message("new one"))
    lines = s.ok("FETCH 1:* (UID FLAGS)")  # the EXISTS comes after the answer
    assert sum(b" FETCH (" in line for line in lines) == 5 and b"* 6 EXISTS" in lines
    lines = s.ok("FETCH 1:* (UID FLAGS)")
    assert lines[5] == b"* 6 FETCH (UID 6 FLAGS ())"  # \Recent went to the appending session
    s.ok("STORE 6 +FLAGS.SILENT (\\Flagged)")
    assert s.ok("FETCH 6 (UID FLAGS)") == [b"* 6 FETCH (UID 6 FLAGS (\\Flagged))"]
    assert _both(s, "UID FLAGS")[0] == _both(s, "UID FLAGS")[1]
    other.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.ok("UID EXPUNGE 1")
    # Expunged in the store, not yet announced here: left out, and the answer says so
    # (RFC 2180 §4.1.3), as the general path does.
    untagged, result = s.command("FETCH 1:* (UID FLAGS)")
    assert result.startswith(b"NO [EXPUNGEISSUED]"), result
    assert [line for line in untagged if b" FETCH (" in line][0].startswith(b"* 2 FETCH (UID 2 ")
    lines = s.ok("NOOP")
    assert b"* 1 EXPUNGE" in lines
    lines = s.ok("FETCH 1:* (UID FLAGS)")
    assert lines[0] == b"* 1 FETCH (UID 2 FLAGS (\\Answered \\Seen))" and len(lines) == 5


def test_another_process_writing_the_data_dir_is_seen(imap_server: Any, connect: Callable[..., Transcript],
                                                      account: Any) -> None:
    """A second Store over the daemon's data directory (another worker process) changes
    flags: the next FETCH shows them, though this process was told nothing."""
    s = connect()
    _fill(s, 3)
    s.ok("SELECT INBOX")
    before = s.ok("FETCH 1:* (UID FLAGS)")
    s.ok(f"UID FETCH 1:* (UID RFC822.SIZE FLAGS {HEADERS})")
    script = ("import sys; from pathlib import Path; from maild import config; from maild.store import Store; "
              "from maild.store.types import FlagMode; "
              f"c = config.load(Path({str(imap_server.config_path)!r})); s = Store(c.data_dir, c.store); "
              f"box = s.require_mailbox({account.address!r}, 'INBOX'); "
              f"d = s.set_flags({account.address!r}, box.id, [3], {{'$Other'}}, FlagMode.ADD); s.close()")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2], timeout=60)
    after = [line for line in s.ok("FETCH 1:* (UID FLAGS)") if b" FETCH (" in line]
    assert after[:2] == before[:2]
    # The command's own answer for message 3 shows the flag (the change feed may also have
    # announced it, as an unsolicited FETCH FLAGS: RFC 3501 §7.4.2).
    [own] = [line for line in after if line.startswith(b"* 3 FETCH (UID 3 FLAGS (")]
    assert b"$Other" in own
    fast, general = _both(s, f"UID RFC822.SIZE FLAGS {HEADERS}")
    assert fast == general and b"$Other" in fast


def test_kept_lines_are_bounded_by_response_cache_mb() -> None:
    """[imap] response_cache_mb bounds the kept lines of all mailboxes; what does not fit
    is answered and not kept."""
    from maild.imap.fastfetch import LineCache
    from maild.store.views import MailboxIndex

    index = MailboxIndex(1, 1, 1)
    lines = [b"x" * 59] * 10  # 100 octets a line with the overhead
    cache = LineCache(max_bytes=2500)
    cache.put(("a",), index, lines, 1000)
    cache.put(("b",), index, lines, 1000)
    assert cache.get(("a",)) is not None  # now the most recently used
    cache.put(("c",), index, lines, 1000)  # over the bound: "b" goes
    assert cache.get(("b",)) is None and cache.get(("a",)) is not None and cache.get(("c",)) is not None
    cache.put(("d",), index, lines, 5000)  # larger than the whole bound: not kept
    assert cache.get(("d",)) is None
    cache.resize(0)
    assert cache.get(("a",)) is None and cache.get(("c",)) is None
