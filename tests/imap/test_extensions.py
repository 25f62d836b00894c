"""Small extensions: CAPABILITY, ID (RFC 2971), NAMESPACE (RFC 2342), ENABLE (RFC 5161),
CONDSTORE (RFC 7162), UNSELECT, LOGOUT."""

from __future__ import annotations

from tests.imap.conftest import Transcript, append, message


def test_capability_id_namespace(imap: Transcript) -> None:
    caps = imap.ok("CAPABILITY")[0].split()[2:]
    for cap in (b"IMAP4rev1", b"IDLE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE", b"CREATE-SPECIAL-USE",
                b"NAMESPACE", b"ID", b"ENABLE", b"CONDSTORE", b"UNSELECT", b"LITERAL+", b"CHILDREN",
                b"LIST-EXTENDED", b"LIST-STATUS", b"ESEARCH", b"QUOTA", b"APPENDLIMIT=52428800"):
        assert cap in caps
    assert imap.ok('ID ("name" "Thunderbird" "version" "115.0")') == [b'* ID ("name" "maild" "vendor" "maild")']
    imap.ok("ID NIL")
    imap.bad('ID ("name")')
    assert imap.ok("NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL']


def test_enable_condstore(imap: Transcript) -> None:
    append(imap, "INBOX", message("a"))
    assert imap.ok("ENABLE CONDSTORE X-UNKNOWN") == [b"* ENABLED CONDSTORE"]  # unknown: ignored (RFC 5161)
    assert imap.ok("ENABLE CONDSTORE") == [b"* ENABLED"]
    imap.ok("SELECT INBOX")
    imap.bad("ENABLE CONDSTORE")  # only before selecting (RFC 5161 §3.1)
    line = imap.ok("FETCH 1 (FLAGS)")[0]
    assert line == b"* 1 FETCH (FLAGS (\\Recent))"
    stored = imap.ok("STORE 1 +FLAGS (\\Seen)")[0]
    modseq = int(stored.split(b"MODSEQ (")[1].split(b")")[0])
    assert imap.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq})") == []
    assert imap.ok(f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {modseq - 1})") == [  # \Recent: RFC 3501 §2.3.2
        b"* 1 FETCH (FLAGS (\\Recent \\Seen) UID 1 MODSEQ (%d))" % modseq]
    highest = [line for line in imap.ok("SELECT INBOX (CONDSTORE)") if b"HIGHESTMODSEQ" in line]
    assert highest == [b"* OK [HIGHESTMODSEQ %d] Highest" % modseq]


def test_logout(imap: Transcript) -> None:
    assert imap.ok("LOGOUT") == [b"* BYE maild logging out"]
    assert imap.closed()
