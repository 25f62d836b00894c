"""Reliability helpers: the daemon's resident memory, and one fresh, normal session per
protocol (built on the protocol areas' transcript clients) proving the daemon still serves."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

from tests.conftest import USERS, MaildServer
from tests.imap.conftest import Transcript as ImapTranscript
from tests.imap.conftest import tls_context
from tests.pop3.conftest import Account, Pop3Transcript
from tests.smtp.conftest import Transcript as SmtpTranscript

_probes = itertools.count()


def rss_kb(server: MaildServer) -> int:
    """The daemon's resident set size (VmRSS, in kB)."""
    assert server.process is not None and server.process.poll() is None, "maild is not running"
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/PID/status")


def smtp_session(server: MaildServer) -> SmtpTranscript:
    """An EHLO'd session on the MX port."""
    t = SmtpTranscript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO probe.example", 250)
    return t


def imap_session(server: MaildServer, user: str = "alice@example.test") -> ImapTranscript:
    """A session on the IMAPS port, logged in."""
    raw = socket.create_connection((server.host, server.ports["imaps"]), 10)
    s = ImapTranscript(tls_context(server.cafile).wrap_socket(raw, server_hostname="localhost"))
    s.login(user, USERS[user])
    return s


def pop3_session(server: MaildServer, user: str = "alice@example.test") -> Pop3Transcript:
    """A session on the POP3S port, logged in."""
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.login(Account(user, USERS[user]))
    return t


def assert_serving(server: MaildServer) -> None:
    """A fresh session on each protocol does real work: SMTP delivers a message, IMAP finds
    it by SEARCH and reads it, POP3 lists and retrieves it."""
    subject = f"probe {next(_probes)} {server.process.pid if server.process else ''}"
    smtp = smtp_session(server)
    try:
        reply = smtp.message("probe@remote.example", ["alice@example.test"],
                             f"From: probe@remote.example\r\nSubject: {subject}\r\n\r\nstill here\r\n".encode())
        assert reply.code == 250, smtp.dump()
        smtp.cmd("QUIT", 221)
    finally:
        smtp.close()
    imap = imap_session(server)
    try:
        imap.ok("SELECT INBOX")
        found = imap.ok(f'UID SEARCH SUBJECT "{subject}"')
        uids = found[0].split()[2:]
        assert len(uids) == 1, found
        body = imap.ok(b"UID FETCH " + uids[0] + b" BODY.PEEK[TEXT]")
        assert b"still here" in body[0], body
        imap.ok("LOGOUT")
    finally:
        imap.close()
    pop = pop3_session(server)
    try:
        count = int(pop.cmd("STAT", ok=True).split()[1])
        _, lines = pop.multi(f"RETR {count}")
        assert f"Subject: {subject}".encode() in lines, pop.dump()
        pop.cmd("QUIT", ok=True)
    finally:
        pop.close()
