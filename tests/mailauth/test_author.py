"""Issue 16: the author DMARC judges is the author the user is shown. A header section
that names no single author unambiguously is refused at end of DATA (554 5.6.0, RFC 7489
§6.6.1, RFC 5322 §3.6) on the MX and on submission, never stored with a From that DMARC
did not judge. A real `maild serve` pointed at the real test DNS server; smtplib-free
transcripts; the mailbox read back over IMAP."""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Callable

import pytest

from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.smtp.conftest import Transcript, messages

# The exact message of issue 16: a line without a colon hides From from a reader that
# stops there (the old mail-authentication reader: dmarc=permerror) while a reader that
# skips it (the old store reader) showed ceo@spoofed.example in IMAP ENVELOPE.
SPOOF = (b"Subject: x\r\n"
         b"X-Bogus line without colon\r\n"
         b"From: Boss <ceo@spoofed.example>\r\n"
         b"\r\n"
         b"Please wire the money today.\r\n")

AMBIGUOUS = {
    "non-field line": (SPOOF, "not a header field"),
    "continuation first": (b" folded: before any field\r\nFrom: ceo@spoofed.example\r\n\r\nx\r\n",
                           "not a header field"),
    "two From fields": (b"From: a@remote.example\r\nFrom: ceo@spoofed.example\r\nSubject: x\r\n"
                        b"\r\nx\r\n", "more than one From"),
    "no From": (b"Subject: x\r\n\r\nx\r\n", "no From"),
    "group without address": (b"From: undisclosed:;\r\nSubject: x\r\n\r\nx\r\n", "no valid address"),
    "several authors, no Sender": (b"From: cfo@spoofed.example, ceo@spoofed.example\r\n\r\nx\r\n",
                                   "no single Sender"),
    "authors in two domains": (b"From: a@remote.example, ceo@spoofed.example\r\nSender: a@remote.example\r\n"
                               b"\r\nx\r\n", "several domains"),
}


@pytest.fixture
def server(maild_factory: Callable[..., MaildServer], dns_zone: DnsZone) -> MaildServer:
    dns_zone.set("spoofed.example", "TXT", "v=spf1 -all")
    dns_zone.set("_dmarc.spoofed.example", "TXT", "v=DMARC1; p=reject")
    dns_zone.set("remote.example", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    return maild_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 1.0})


def _mx(server: MaildServer) -> Transcript:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.remote.example", 250)
    return t


def _inbox_froms(server: MaildServer) -> list[bytes]:
    """From as IMAP shows it: the ENVELOPE's from, for every message in bob's INBOX."""
    context = ssl.create_default_context(cafile=str(server.cafile))
    with imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=context,
                           timeout=30) as imap:
        imap.login("bob@example.test", "bob-secret")
        imap.select("INBOX", readonly=True)
        typ, data = imap.fetch("1:*", "(ENVELOPE)")
        assert typ == "OK"
        return [d if isinstance(d, bytes) else d[0] for d in data if d]


def test_the_issue_16_spoof_is_refused_not_stored(server: MaildServer) -> None:
    t = _mx(server)
    reply = t.message("bounce@remote.example", ["bob@example.test"], SPOOF)
    assert reply.code == 554, t.dump()
    assert reply.text == "5.6.0 Message header has a line that is not a header field"
    # The same author without the hiding line is judged by DMARC and refused by its policy.
    reply = t.message("bounce@remote.example", ["bob@example.test"],
                      SPOOF.replace(b"X-Bogus line without colon\r\n", b""))
    assert (reply.code, reply.text.split()[0]) == (550, "5.7.1"), t.dump()
    assert "spoofed.example" in reply.text
    t.cmd("QUIT", 221)
    assert not [m for m in messages(server, "bob@example.test") if b"spoofed.example" in m]
    envelopes = _inbox_froms(server) if messages(server, "bob@example.test") else []
    assert not [e for e in envelopes if b"spoofed.example" in e]


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_ambiguous_author_refused_on_the_mx(server: MaildServer, case: str) -> None:
    raw, why = AMBIGUOUS[case]
    t = _mx(server)
    reply = t.message("bounce@remote.example", ["bob@example.test"], raw)
    assert (reply.code, reply.text.split()[0]) == (554, "5.6.0"), t.dump()
    assert why in reply.text
    # The transaction is over and the session goes on: a proper message is delivered.
    good = b"From: Ann <ann@remote.example>\r\nSubject: fine\r\n\r\nhello\r\n"
    assert t.message("bounce@remote.example", ["bob@example.test"], good).code == 250
    t.cmd("QUIT", 221)
    stored = messages(server, "bob@example.test")
    assert len(stored) == 1 and b"Subject: fine" in stored[0]
    (envelope,) = _inbox_froms(server)
    assert b'(("Ann" NIL "ann" "remote.example"))' in envelope


def test_several_authors_with_one_sender_are_fine(server: MaildServer) -> None:
    t = _mx(server)
    raw = (b"From: a@remote.example, b@remote.example\r\nSender: a@remote.example\r\n"
           b"Subject: two authors\r\n\r\nx\r\n")
    assert t.message("bounce@remote.example", ["bob@example.test"], raw).code == 250, t.dump()
    t.cmd("QUIT", 221)
    (stored,) = messages(server, "bob@example.test")
    assert b"dmarc=none" in stored and b"header.from=remote.example" in stored


def test_submission_refuses_the_same(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["submission"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.starttls()
    t.cmd("EHLO client.example", 250)
    t.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQ=", 235)
    hidden = (b"Subject: x\r\nX-Bogus line without colon\r\nFrom: alice@example.test\r\n"
              b"\r\nx\r\n")
    reply = t.message("alice@example.test", ["bob@example.test"], hidden)
    assert (reply.code, reply.text.split()[0]) == (554, "5.6.0"), t.dump()
    t.cmd("QUIT", 221)
    assert messages(server, "bob@example.test") == []
