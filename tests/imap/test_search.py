"""SEARCH (RFC 3501 §6.4.4), ESEARCH (RFC 4731), CHARSET, MODSEQ (RFC 7162 §3.1.5)."""

from __future__ import annotations

import pytest

from maild.imap.commands import Search
from maild.imap.parser import parse_command
from maild.imap.search import _required_clauses
from tests.imap.conftest import Transcript, append, message


def fill(imap: Transcript) -> None:
    append(imap, "INBOX", message("Quarterly report", "numbers inside", sender="carol@example.org"), "\\Seen")
    append(imap, "INBOX", message("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "aus Köln", extra="X-Tag: blue\r\n"), "\\Flagged")
    append(imap, "INBOX", b"From: dave@example.net\r\nSubject: big\r\nDate: Tue, 2 Jan 2024 10:00:00 +0000\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           b"c2VjcmV0IHdvcmQ=\r\n" + b"x" * 2000 + b"\r\n", "\\Deleted $Junk")
    imap.ok("SELECT INBOX")


def search(imap: Transcript, query: str | bytes) -> list[int]:
    line = imap.ok(query)[0]
    assert line.startswith(b"* SEARCH")
    return [int(n) for n in line.split()[2:]]


def test_search_keys(imap: Transcript) -> None:
    fill(imap)
    assert search(imap, "SEARCH ALL") == [1, 2, 3]
    assert search(imap, "SEARCH FROM carol") == [1]
    assert search(imap, "SEARCH SUBJECT report") == [1]
    assert search(imap, "SEARCH SUBJECT REPORT NOT FROM carol") == []
    assert search(imap, "SEARCH OR FLAGGED DELETED") == [2, 3]
    assert search(imap, "SEARCH UNSEEN") == [2, 3]
    assert search(imap, "SEARCH SEEN") == [1]
    assert search(imap, "SEARCH KEYWORD $Junk") == [3]
    assert search(imap, "SEARCH UNKEYWORD $Junk UNDELETED") == [1, 2]
    assert search(imap, "SEARCH LARGER 1000") == [3]
    assert search(imap, "SEARCH SMALLER 1000 2:*") == [2]
    assert search(imap, "SEARCH HEADER X-Tag blue") == [2]
    assert search(imap, 'SEARCH HEADER X-Tag ""') == [2]
    assert search(imap, "SEARCH BODY \"secret word\"") == [3]  # base64 body decoded
    assert search(imap, "SEARCH TEXT dave") == [3]  # TEXT covers the header too
    assert search(imap, "SEARCH SENTON 2-Jan-2024") == [3]
    assert search(imap, "SEARCH SENTBEFORE 2-Jan-2024") == [1, 2]
    assert search(imap, "SEARCH SINCE 1-Jan-2020 BEFORE 1-Jan-2100") == [1, 2, 3]
    # All three are this session's \Recent (RFC 3501 §2.3.2); NEW is RECENT UNSEEN.
    assert search(imap, "SEARCH RECENT") == [1, 2, 3] and search(imap, "SEARCH NEW") == [2, 3]
    assert search(imap, "SEARCH OLD") == [] and search(imap, "SEARCH NOT RECENT") == []
    assert search(imap, "UID SEARCH UID 2:*") == [2, 3]
    assert search(imap, "SEARCH ((FROM carol) OR (SUBJECT big) (TO alice))") == [1]
    assert search(imap, "SEARCH CHARSET UTF-8 SUBJECT GRÜ") == [2]  # RFC 2047 decoded, case-folded


def test_charset_and_errors(imap: Transcript) -> None:
    fill(imap)
    assert search(imap, "SEARCH CHARSET UTF-8 BODY {5+}\r\nKöln".encode()) == [2]
    imap.no("SEARCH CHARSET KOI8-R ALL", code="BADCHARSET")
    imap.bad("SEARCH BOGUS")
    imap.bad("SEARCH FROM")


def test_esearch_and_modseq(imap: Transcript) -> None:
    fill(imap)
    assert imap.ok("SEARCH RETURN (MIN MAX COUNT) ALL")[0].endswith(b") MIN 1 MAX 3 COUNT 3")
    line = imap.ok("UID SEARCH RETURN () UNDELETED")[0]
    assert line.startswith(b'* ESEARCH (TAG "') and line.endswith(b") UID ALL 1:2")
    assert imap.ok("SEARCH RETURN (COUNT) KEYWORD nothing")[0].endswith(b") COUNT 0")
    # The first CONDSTORE-enabling command reports HIGHESTMODSEQ too (RFC 7162 §3.1).
    lines = imap.ok("SEARCH MODSEQ 1")
    assert lines[0] == b"* OK [HIGHESTMODSEQ 4] Highest"
    assert lines[1] == b"* SEARCH 1 2 3 (MODSEQ 4)"
    assert imap.ok("SEARCH MODSEQ 1") == [b"* SEARCH 1 2 3 (MODSEQ 4)"]  # only the first


def test_esearch_min_max_modseq(imap: Transcript) -> None:
    """RFC 4731 §3.2, RFC 7162 §3.1.5: the MODSEQ of an ESEARCH is that of the messages it
    returns: MIN's or MAX's alone, the higher of the two, or of all with ALL or COUNT."""
    fill(imap)
    # Appended with mod-sequences 2, 3, 4; the STORE gives message 1 the highest, 5.
    imap.ok("STORE 1 +FLAGS (\\Answered)")
    assert imap.ok("SEARCH RETURN (MIN) MODSEQ 1")[-1].endswith(b") MIN 1 MODSEQ 5")
    assert imap.ok("SEARCH RETURN (MAX) MODSEQ 1")[-1].endswith(b") MAX 3 MODSEQ 4")
    assert imap.ok("SEARCH RETURN (MIN) 2:3 MODSEQ 1")[-1].endswith(b") MIN 2 MODSEQ 3")
    assert imap.ok("SEARCH RETURN (MIN MAX) MODSEQ 1")[-1].endswith(b") MIN 1 MAX 3 MODSEQ 5")
    assert imap.ok("SEARCH RETURN (MIN MAX) 2:3 MODSEQ 1")[-1].endswith(b") MIN 2 MAX 3 MODSEQ 4")
    assert imap.ok("SEARCH RETURN (COUNT) MODSEQ 1")[-1].endswith(b") COUNT 3 MODSEQ 5")
    assert imap.ok("UID SEARCH RETURN (MAX ALL) MODSEQ 1")[-1].endswith(b") UID MAX 3 ALL 1:3 MODSEQ 5")


def test_header_keys_over_escaped_encoded_and_raw_utf8_fields(imap: Transcript) -> None:
    """FROM/SUBJECT/TO are first tried against the stored envelope bytes; quotes and
    backslashes (escaped there), encoded words and raw UTF-8 must still be found."""
    append(imap, "INBOX", b'From: "Smith, Bob" <bob@example.test>\r\nSubject: plain C:\\temp\\x\r\n\r\nhi\r\n')
    append(imap, "INBOX", message("=?utf-8?b?R3LDvMOfZSBhdXMgS8O2bG4=?="))
    append(imap, "INBOX", "From: zoë@example.test\r\nTo: a@example.test\r\nSubject: Grüße aus Köln\r\n\r\nhi\r\n"
           .encode())
    imap.ok("SELECT INBOX")
    assert search(imap, 'SEARCH FROM "\\"smith, bob\\""') == [1]
    assert search(imap, 'SEARCH SUBJECT "c:\\\\temp" FROM smith') == [1]
    assert search(imap, 'SEARCH SUBJECT "c:\\\\tmp"') == []
    assert search(imap, "SEARCH CHARSET UTF-8 SUBJECT {5+}\r\nKÖLN".encode()) == [2, 3]
    assert search(imap, "SEARCH CHARSET UTF-8 FROM {4+}\r\nZOË".encode()) == [3]
    assert search(imap, "SEARCH SUBJECT aus NOT FROM zo") == [2]
    assert search(imap, "SEARCH SUBJECT nowhere") == []


def test_or_of_header_keys(imap: Transcript) -> None:
    """Thunderbird's quick search, ``OR OR FROM x SUBJECT x TO x``: an OR of header keys
    prefilters the envelope pass by clauses; every message either side matches is found,
    over plain, escaped, encoded and raw UTF-8 fields."""
    fill(imap)
    append(imap, "INBOX", b'From: "Smith, Bob" <bob@example.test>\r\nSubject: plain C:\\temp\\x\r\n\r\nhi\r\n')
    append(imap, "INBOX", "From: zoë@example.test\r\nTo: a@example.test\r\nSubject: Grüße aus Köln\r\n\r\nhi\r\n"
           .encode())
    imap.ok("NOOP")
    assert search(imap, "SEARCH OR FROM carol SUBJECT big") == [1, 3]
    assert search(imap, "SEARCH OR OR FROM report SUBJECT report TO report") == [1]
    assert search(imap, "SEARCH OR FROM nobody SUBJECT nothing") == []
    assert search(imap, 'SEARCH OR FROM "\\"smith, bob\\"" SUBJECT big') == [3, 4]
    assert search(imap, "SEARCH CHARSET UTF-8 OR SUBJECT {6+}\r\nGRÜSS FROM dave".encode()) == [2, 3, 5]
    assert search(imap, "SEARCH CHARSET UTF-8 OR SUBJECT {2+}\r\nÄ FROM dave".encode()) == [3]
    assert search(imap, "SEARCH OR (FROM carol SUBJECT report) (FROM dave SUBJECT big)") == [1, 3]
    assert search(imap, "SEARCH OR FROM carol SUBJECT big NOT DELETED") == [1]
    assert search(imap, "SEARCH OR FROM carol FLAGGED") == [1, 2]  # a side without text: no prefilter


@pytest.mark.parametrize(("query", "clauses"), [
    ("FROM a", [["a"]]),
    ("FROM a SUBJECT b UNSEEN", [["a"], ["b"]]),
    ("OR FROM a SUBJECT b", [["a", "b"]]),
    ("OR OR FROM a SUBJECT a TO a", [["a", "a", "a"]]),
    ("OR (FROM a SUBJECT b) TO c", [["a", "c"], ["b", "c"]]),
    ("OR FROM a FLAGGED", []),  # FLAGGED alone matches without any text
    ("NOT FROM a", []),
    ("HEADER X-Tag a", []),  # not an envelope field
])
def test_clauses_an_or_implies(query: str, clauses: list[list[str]]) -> None:
    command = parse_command(f"a SEARCH {query}".encode())
    assert isinstance(command, Search)
    assert _required_clauses(command.key) == clauses


def test_address_keys_match_parsed_addresses(imap: Transcript) -> None:
    """SEARCH FROM/TO/CC match the address as parsed (comments and spacing gone) as well as
    the header text (RFC 3501 §6.4.4)."""
    append(imap, "INBOX", b"From: <user (c)@ (c) domain.org>\r\nTo: Team: x@y.example, z@y.example;\r\n"
           b"Cc: Dana <dana @ example.net>\r\nSubject: parsed\r\n\r\nhi\r\n")
    append(imap, "INBOX", message("other"))
    imap.ok("SELECT INBOX")
    assert search(imap, "SEARCH FROM user@domain.org") == [1]
    assert search(imap, "SEARCH FROM \"(c)\"") == [1]  # the header text still counts
    assert search(imap, "SEARCH TO z@y.example") == [1]
    assert search(imap, "SEARCH TO Team") == [1]
    assert search(imap, 'SEARCH CC "dana@example.net"') == [1]
    assert search(imap, 'SEARCH OR CC "dana@example.net" FROM bob') == [1, 2]
    assert search(imap, "SEARCH FROM nobody@domain.org") == []
