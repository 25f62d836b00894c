"""Real client libraries (imaplib, imapclient) and start-up sequences of Thunderbird and
Outlook replayed as transcripts."""

from __future__ import annotations

import base64
import imaplib
import ssl
from collections.abc import Callable
from typing import Any

from imapclient import IMAPClient

from tests.imap.conftest import Account, Transcript, append, message, tls_context


def test_imaplib_round_trip(imaplib_client: imaplib.IMAP4_SSL) -> None:
    c = imaplib_client
    typ, data = c.append("INBOX", "(\\Flagged)", imaplib.Time2Internaldate(1_700_000_000), message("imaplib"))
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"1"]
    typ, data = c.uid("SEARCH", None, "SUBJECT", "imaplib")
    assert data == [b"1"]
    typ, data = c.fetch("1", "(RFC822)")
    assert data[0][1] == message("imaplib")
    assert c.store("1", "+FLAGS", "\\Deleted")[0] == "OK"
    typ, data = c.expunge()
    assert data == [b"1"]
    assert c.create("imaplib/child")[0] == "OK"
    typ, data = c.list()
    assert b'(\\HasNoChildren) "/" imaplib/child' in data
    assert c.rename("imaplib/child", "imaplib/other")[0] == "OK"
    assert c.delete("imaplib/other")[0] == "OK"
    assert c.status("INBOX", "(MESSAGES UNSEEN)")[1] == [b"INBOX (MESSAGES 0 UNSEEN 0)"]
    assert c.select("Nope")[0] == "NO"


def test_imapclient(imap_server: Any, account: Account) -> None:
    context = tls_context(imap_server.cafile)
    with IMAPClient(imap_server.host, port=imap_server.ports["imaps"], ssl=True, ssl_context=context,
                    timeout=10) as c:
        c.login(account.address, account.password)
        assert b"MOVE" in c.capabilities()
        c.append("INBOX", message("one"), flags=[b"\\Seen"])
        c.append("INBOX", message("two"))
        info = c.select_folder("INBOX")
        assert info[b"EXISTS"] == 2 and info[b"UIDNEXT"] == 3 and info[b"RECENT"] == 2
        assert c.search(["UNSEEN"]) == [2]
        fetched = c.fetch([1, 2], ["ENVELOPE", "FLAGS", "BODYSTRUCTURE", "RFC822.SIZE"])
        assert fetched[1][b"ENVELOPE"].subject == b"one"
        assert fetched[2][b"FLAGS"] == (b"\\Recent",)
        c.move([2], "Archive")
        assert c.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
        folders = {name: flags for flags, _, name in c.list_folders()}
        assert b"\\Sent" in folders["Sent"]
        assert c.find_special_folder(b"\\Trash") == "Trash"
        c.idle()
        c.idle_done()
        assert c.namespace().personal == (("", "/"),)
        c.unselect_folder()


def test_imaplib_starttls_and_plain_port(imap_server: Any) -> None:
    with imaplib.IMAP4(imap_server.host, imap_server.ports["imap"], timeout=10) as c:
        assert "LOGINDISABLED" in c.capabilities
        context = ssl.create_default_context(cafile=str(imap_server.cafile))
        context.check_hostname = False
        c.starttls(context)
        c.login("bob@example.test", "bob-secret")
        assert c.select("INBOX")[0] == "OK"


def test_thunderbird_startup(connect: Callable[..., Transcript], account: Account) -> None:
    s = connect(login=False)
    assert b"IMAP4rev1" in s.ok("capability")[0]
    s.send("2 authenticate PLAIN")
    assert s.line() == b"+ "
    s.send(base64.b64encode(f"\0{account.address}\0{account.password}".encode()).decode())
    assert s.line().startswith(b"2 OK [CAPABILITY IMAP4rev1")
    s.ok('ID ("name" "Thunderbird" "version" "115.3.1")')
    assert s.ok("namespace") == [b'* NAMESPACE (("" "/")) NIL NIL']
    assert s.ok("enable CONDSTORE") == [b"* ENABLED CONDSTORE"]
    listed = s.ok('list (SUBSCRIBED) "" "*" return (SPECIAL-USE)')
    assert any(line.startswith(b"* LIST (") and line.endswith(b'"/" Sent') and b"\\Sent" in line for line in listed)
    append(s, "INBOX", message("for thunderbird"))
    selected = s.ok('select "INBOX" (CONDSTORE)')
    assert any(line.startswith(b"* OK [HIGHESTMODSEQ ") for line in selected)
    assert b"* 1 EXISTS" in selected
    lines = s.ok("UID fetch 1:* (FLAGS) (CHANGEDSINCE 1)")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Recent) UID 1 MODSEQ (")
    s.ok("UID fetch 1 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
         "Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])")
    s.send("9 IDLE")
    assert s.line() == b"+ idling"
    s.send("DONE")
    assert s.line() == b"9 OK IDLE completed"


def test_outlook_startup(connect: Callable[..., Transcript], account: Account) -> None:
    s = connect(login=False)
    s.ok("CAPABILITY")
    s.ok(f'LOGIN "{account.address}" "{account.password}"')
    s.ok("CAPABILITY")
    assert s.ok('LIST "" ""') == [b'* LIST (\\Noselect) "/" ""']
    assert len(s.ok('LIST "" "*"')) == 6
    s.ok('LSUB "" "*"')
    s.ok('STATUS "Sent" (MESSAGES UNSEEN UIDNEXT UIDVALIDITY)')
    append(s, "INBOX", message("for outlook"))
    s.ok('SELECT "INBOX"')
    assert s.ok("UID FETCH 1:* (UID FLAGS)") == [b"* 1 FETCH (UID 1 FLAGS (\\Recent))"]
    body = s.ok("UID FETCH 1 (UID RFC822.SIZE BODY.PEEK[] INTERNALDATE FLAGS)")[0]
    assert b"for outlook" in body
    s.ok("UID STORE 1 +FLAGS.SILENT (\\Seen)")
    s.ok("NOOP")
    s.send("x IDLE")
    assert s.line() == b"+ idling"
    s.send("DONE")
    assert s.line() == b"x OK IDLE completed"
    s.ok("LOGOUT")
