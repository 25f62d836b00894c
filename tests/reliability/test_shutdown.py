"""SIGTERM answers what it stored: the listeners close, commands in flight finish and are
answered, then the sessions close with their protocol's goodbye (maild/shutdown.py).

Before, the daemon closed the connections first and finished the queued commits after: about
four messages per stop were stored but never answered, so their senders sent them again and
users got duplicates.
"""

from __future__ import annotations

import os
import smtplib
import socket
import threading
import time

from tests.conftest import MaildServer
from tests.reliability.conftest import imap_session, pop3_session

SENDERS = 8
STOPS = 3


class Sender(threading.Thread):
    """Sends messages to alice over one connection after another until the daemon is gone;
    remembers what it sent and what was answered 250."""

    def __init__(self, server: MaildServer, name: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.prefix = name
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.count = 0
        self.started_sending = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                smtp = smtplib.SMTP(self.server.host, self.server.ports["smtp"], timeout=30)
            except OSError:
                return  # the listener is closed: the daemon is stopping
            try:
                smtp.ehlo("load.remote.example")
                while True:
                    subject = f"{self.prefix}-{self.count}"
                    self.count += 1
                    size = 40_000 if self.count % 5 == 0 else 3_000  # some blob files too
                    body = b"".join(os.urandom(30).hex().encode() + b"\r\n" for _ in range(size // 62))
                    raw = f"From: s@remote.example\r\nSubject: {subject}\r\n\r\n".encode() + body
                    self.sent.add(subject)
                    self.started_sending.set()
                    smtp.sendmail("s@remote.example", ["alice@example.test"], raw)
                    self.acked.add(subject)
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                try:
                    smtp.close()
                except OSError:
                    pass


def _stored_subjects(server: MaildServer) -> list[str]:
    store = server.store()
    try:
        inbox = store.require_mailbox("alice@example.test", "INBOX")
        return [store.envelope("alice@example.test", inbox.id, uid).subject or ""
                for uid in store.uids("alice@example.test", inbox.id)]
    finally:
        store.close()


def test_sigterm_under_smtp_load_answers_every_stored_message(maild_factory) -> None:  # type: ignore[no-untyped-def]
    server = maild_factory(smtp={"messages_per_minute_per_ip": 1_000_000},
                           server={"shutdown_grace": 10.0})
    acked: set[str] = set()
    sent: set[str] = set()
    stop_times: list[float] = []
    for stop in range(STOPS):
        if stop:
            server.start()
        idle = imap_session(server)  # an IDLE client: * BYE before the close
        idle.ok("SELECT INBOX")
        idle.send(b"i1 IDLE")
        assert idle.line().startswith(b"+ ")
        senders = [Sender(server, f"s{stop}.{n}") for n in range(SENDERS)]
        for sender in senders:
            sender.start()
        for sender in senders:
            assert sender.started_sending.wait(10)
        time.sleep(1.0)  # let the load run
        started = time.monotonic()
        assert server.stop() == 0, server.log()[-3000:]
        took = time.monotonic() - started
        for sender in senders:
            sender.join(30)
            assert not sender.is_alive()
            acked |= sender.acked
            sent |= sender.sent
        lines = []
        try:
            while True:
                line = idle.line()
                lines.append(line)
        except (EOFError, OSError):
            pass
        finally:
            idle.close()
        assert any(line.startswith(b"* BYE") for line in lines), lines
        assert took < 10, took
        stop_times.append(took)
    stored = _stored_subjects(server)
    assert len(stored) == len(set(stored))
    assert acked - set(stored) == set(), "acknowledged but lost"
    assert set(stored) - acked == set(), "stored but never answered 250: the sender will send it again"
    assert len(acked) > 50 * STOPS, len(acked)
    print(f"\nshutdown: {STOPS} SIGTERMs under {SENDERS} SMTP connections; {len(acked)} messages "
          f"answered 250 and stored, {len(sent - acked)} cut off (421, not stored); stop took "
          + ", ".join(f"{t:.2f}" for t in stop_times) + " s")
    log = server.log()
    assert log.count("maild stopping") == STOPS
    assert "still busy after" not in log
    server.start()


def test_pop3_and_imap_sessions_close_on_sigterm(maild_factory) -> None:  # type: ignore[no-untyped-def]
    """An IMAP session gets * BYE, a POP3 session is closed without its UPDATE state (RFC
    1939 §6: nothing it marked deleted is removed), an SMTP session gets 421."""
    server = maild_factory()
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail("s@remote.example", ["alice@example.test"], b"Subject: keep\r\n\r\nkeep\r\n")
    pop = pop3_session(server)
    pop.cmd("DELE 1", ok=True)
    imap = imap_session(server, "bob@example.test")
    imap.ok("SELECT INBOX")
    smtp_raw = socket.create_connection((server.host, server.ports["smtp"]), 10)
    smtp_file = smtp_raw.makefile("rb")
    assert smtp_file.readline().startswith(b"220")
    assert server.stop() == 0
    assert smtp_file.readline().startswith(b"421 4.3.2"), "SMTP: 421 before the close"
    smtp_raw.close()
    assert imap.line().startswith(b"* BYE"), "IMAP: * BYE before the close"
    imap.close()
    assert pop.closed()
    pop.close()
    server.start()
    pop = pop3_session(server)
    assert pop.cmd("STAT", ok=True).split()[1] == "1"  # the DELE was not carried out
    pop.cmd("QUIT", ok=True)
    pop.close()
