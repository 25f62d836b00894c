"""SAVEDATE (RFC 8514): FETCH SAVEDATE (§4) and the SAVEDBEFORE / SAVEDON / SAVEDSINCE /
SAVEDATESUPPORTED search keys (§5); the save date is set whenever a message enters a
mailbox (§3), unlike the internal date, which APPEND may set and COPY keeps."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from maild.imap import savedate
from maild.store.codec import MessageRecord, decode_meta
from tests.imap.conftest import Transcript, append, message

DATE_TIME = rb'"(\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4})"'


def _saved(line: bytes) -> datetime:
    match = re.search(rb"SAVEDATE " + DATE_TIME, line)
    assert match, line
    return datetime.strptime(match.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")


def _day(when: datetime) -> str:
    return when.strftime("%d-%b-%Y")


def test_fetch_and_search(imap: Transcript) -> None:
    assert b"SAVEDATE" in imap.ok("CAPABILITY")[0].split()
    raw = message("old")
    before = datetime.now(UTC).replace(microsecond=0)
    imap.ok(f'APPEND INBOX "05-Feb-2020 10:00:00 +0000" {{{len(raw)}+}}\r\n'.encode() + raw)
    append(imap, "INBOX", message("new"))
    imap.ok("SELECT INBOX")
    lines = imap.ok("FETCH 1:2 (INTERNALDATE SAVEDATE)")
    assert b'INTERNALDATE "05-Feb-2020 10:00:00 +0000"' in lines[0]
    saved = [_saved(line) for line in lines]
    now = datetime.now(UTC)
    assert all(before <= s <= now for s in saved)  # the APPEND's time, not the date it gave
    today, tomorrow = _day(now), _day(now + timedelta(days=1))
    assert imap.ok(f"SEARCH SAVEDON {today}") == [b"* SEARCH 1 2"]
    assert imap.ok(f"SEARCH SAVEDBEFORE {today}") == [b"* SEARCH"]
    assert imap.ok(f"SEARCH SAVEDBEFORE {tomorrow}") == [b"* SEARCH 1 2"]
    assert imap.ok(f"SEARCH SAVEDSINCE {tomorrow}") == [b"* SEARCH"]
    assert imap.ok("SEARCH SAVEDSINCE 1-Jan-2021 BEFORE 1-Jan-2021") == [b"* SEARCH 1"]
    assert imap.ok("UID SEARCH SAVEDATESUPPORTED") == [b"* SEARCH 1 2"]
    assert imap.ok("SEARCH NOT SAVEDATESUPPORTED") == [b"* SEARCH"]
    imap.bad("SEARCH SAVEDON yesterday")
    imap.bad("FETCH 1 (SAVEDATE.PEEK)")


def test_copy_and_move_save_anew(imap: Transcript) -> None:
    append(imap, "INBOX", message("a"))
    append(imap, "INBOX", message("b"))
    imap.ok("SELECT INBOX")
    first = [_saved(line) for line in imap.ok("FETCH 1:2 (SAVEDATE)")]
    time.sleep(1.1)  # the wire's resolution is a second
    imap.ok("COPY 1 Archive")
    imap.ok("MOVE 2 Archive")
    imap.ok("SELECT Archive")
    lines = imap.ok("FETCH 1:2 (INTERNALDATE SAVEDATE)")
    assert all(_saved(line) > first[0] for line in lines)  # RFC 8514 §3
    internal = imap.ok("FETCH 1:2 (INTERNALDATE)")
    imap.ok("SELECT INBOX")
    assert internal[0].split(b"INTERNALDATE ")[1] == imap.ok("FETCH 1 (INTERNALDATE)")[0].split(b"INTERNALDATE ")[1]


def test_records_without_a_save_date() -> None:
    """Records written before save dates were kept end with their prefix: they decode with
    no save date, and SAVEDATE answers the internal date; new records carry it."""
    old = MessageRecord(7, 1_600_000_000.0, 100, frozenset({"\\Seen", "$Work"}), b"\x01" * 32, b"X-Prefix: 1\r\n")
    meta = decode_meta(3, old.encode())
    assert meta.save_date is None and MessageRecord.decode(old.encode()).saved is None
    assert savedate.save_date(meta) == 1_600_000_000.0
    assert savedate.fetch_item(meta) == b'SAVEDATE "13-Sep-2020 12:26:40 +0000"'
    new = MessageRecord(7, 1_600_000_000.0, 100, frozenset({"$Work"}), b"\x01" * 32, b"X-Prefix: 1\r\n",
                        1_700_000_000.5)
    assert decode_meta(3, new.encode()).save_date == 1_700_000_000.5
    again = MessageRecord.decode(new.encode())
    assert again == new and again.encode() == new.encode()
    assert decode_meta(3, new.encode())._replace(save_date=None) == meta._replace(flags=frozenset({"$Work"}))
