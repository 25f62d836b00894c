"""[pop3] settings: idle_timeout, mark_seen_on_retr = false, connection limits."""

from __future__ import annotations

import time

from tests.conftest import MaildServer
from tests.pop3.conftest import Account, Pop3Transcript, deliver, message, poplib_session, stored

MAILD_OVERRIDES = {"pop3": {"idle_timeout": 1.0, "mark_seen_on_retr": False, "max_connections_per_ip": 3}}


def test_idle_session_is_closed_and_deletes_nothing(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.login(account)
    t.cmd("DELE 1", ok=True)
    start = time.monotonic()
    assert t.status(ok=False) == "-ERR Disconnected for inactivity"
    assert 0.8 < time.monotonic() - start < 5
    assert t.closed()
    assert len(stored(server, account.address)) == 1  # RFC 1939 §3: no UPDATE state
    poplib_session(server, account).quit()  # and the lock went with the connection


def test_client_that_stops_reading_a_retr_is_disconnected(server: MaildServer, account: Account) -> None:
    line = b"x" * 78 + b"\r\n"
    deliver(server, account.address, message(1, line * (8 * 1024 * 1024 // len(line))))
    t = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile, rcvbuf=65536)
    t.greeting()
    t.login(account)
    t.send(b"RETR 1\r\n")
    deadline = time.monotonic() + 10
    while True:  # the lock is released when the server gives up on us
        assert time.monotonic() < deadline, "the stalled session kept its lock"
        other = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
        other.greeting()
        other.cmd(f"USER {account.address}", ok=True)
        answer = other.cmd(f"PASS {account.password}")
        other.close()
        if answer.startswith("+OK"):
            break
        assert "[IN-USE]" in answer
        time.sleep(0.2)
    assert t.closed()
    assert len(stored(server, account.address)) == 1


def test_retr_does_not_mark_seen_when_disabled(server: MaildServer, account: Account) -> None:
    deliver(server, account.address, message(1))
    client = poplib_session(server, account)
    client.retr(1)
    client.quit()
    ((flags, _),) = stored(server, account.address).values()
    assert "\\Seen" not in flags


def test_connections_per_ip(server: MaildServer) -> None:
    sessions = [Pop3Transcript(server.host, server.ports["pop3"]) for _ in range(3)]
    for t in sessions:
        t.greeting()
    extra = Pop3Transcript(server.host, server.ports["pop3s"], implicit_tls=True, cafile=server.cafile)
    assert extra.status(ok=False) == "-ERR [SYS/TEMP] Too many connections, try again later"
    assert extra.closed()
    sessions[0].cmd("QUIT", ok=True)
    assert sessions[0].closed()
    again = Pop3Transcript(server.host, server.ports["pop3"])
    again.greeting()
    for t in sessions[1:] + [again]:
        t.close()
