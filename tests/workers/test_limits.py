"""Abuse limits hold across workers (issue 21 item 4; docs/security.md): connections per
client IP, the SMTP message rate per IP (451 4.7.1 at MAIL FROM) and the auth penalty's
delay per IP are counted over the whole tree, not per worker — else N workers would give a
client N times its limit."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from tests.conftest import MaildServer
from tests.imap.conftest import Transcript as ImapTranscript
from tests.smtp.conftest import Transcript as SmtpTranscript
from tests.workers.conftest import on_each_worker, worker_of

LIMIT = 3


def imap(server: MaildServer) -> ImapTranscript:
    return ImapTranscript(socket.create_connection((server.host, server.ports["imap"]), 10))


def test_connections_per_ip_across_workers(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory(imap={"max_connections_per_ip": LIMIT})
    held: list[ImapTranscript] = []
    deadline = time.monotonic() + 30
    while len(held) < LIMIT or len({worker_of(server, s.sock) for s in held}) < 2:
        assert time.monotonic() < deadline, "could not spread the connections over both workers"
        if len(held) == LIMIT:  # all on one worker: give one back and try again
            held.pop(0).close()
            time.sleep(0.2)
        s = imap(server)
        if s.greeting.startswith(b"* OK"):
            held.append(s)
        else:
            s.close()
            time.sleep(0.2)
    # LIMIT connections held, on both workers: whichever worker takes the next one refuses it.
    for _ in range(8):
        s = imap(server)
        assert s.greeting.startswith(b"* BYE"), (s.greeting, worker_of(server, s.sock))
        s.close()
    held.pop().close()
    deadline = time.monotonic() + 5
    while not (s := imap(server)).greeting.startswith(b"* OK"):  # the slot is free again
        s.close()
        assert time.monotonic() < deadline, "a released slot stayed taken"
        time.sleep(0.05)
    s.close()
    for s in held:
        s.close()


def test_smtp_message_rate_per_ip_across_workers(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory(smtp={"messages_per_minute_per_ip": 2 * LIMIT})

    def connect() -> SmtpTranscript:
        t = SmtpTranscript(server.host, server.ports["smtp"])
        t.greeting()
        t.cmd("EHLO client.example", 250)
        return t
    sessions = list(on_each_worker(server, connect, lambda t: t.sock, lambda t: t.close()).values())
    body = b"From: a@remote.example\r\nSubject: rate\r\n\r\nx\r\n"
    for session in sessions:  # LIMIT messages through each worker: the bucket is empty now
        for _ in range(LIMIT):
            assert session.message("a@remote.example", ["alice@example.test"], body).code == 250
    for session in sessions:
        # RFC 5321 §4.2.5 / RFC 3463 4.7.1: a temporary refusal, whichever worker is asked.
        reply = session.cmd("MAIL FROM:<a@remote.example>")
        assert (reply.code, reply.lines[0][:5]) == (451, "4.7.1"), reply
        session.cmd("QUIT", 221)


def test_auth_penalty_per_ip_across_workers(workers_factory: Callable[..., MaildServer]) -> None:
    """Failures through one worker delay the next attempt through the other (failure_delay
    0.2 s doubling, at most 1 s: tests/conftest.py)."""
    server = workers_factory(imap={"allow_plaintext_auth_on_loopback": True})
    sessions = on_each_worker(server, lambda: imap(server), lambda s: s.sock, lambda s: s.close())
    first, second = sessions.values()
    for _ in range(3):
        first.no('LOGIN alice@example.test "wrong password"')
    started = time.monotonic()
    second.no('LOGIN alice@example.test "wrong again"')
    assert time.monotonic() - started >= 0.6, "the other worker did not know of the failures"
    first.close()
    second.close()
