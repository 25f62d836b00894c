"""Abuse limits: connections in total and per IP, message rates per IP and per user,
command timeout."""

from __future__ import annotations

import base64

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript

MAILD_OVERRIDES = {
    "smtp": {"max_connections_per_ip": 3, "messages_per_minute_per_ip": 3,
             "command_timeout": 1.0},
    "submission": {"messages_per_minute_per_user": 2, "messages_per_minute_per_ip": 0},
}


def test_connections_per_ip(server: MaildServer) -> None:
    sessions = [Transcript(server.host, server.ports["smtp"]) for _ in range(3)]
    for t in sessions:
        t.greeting()
    extra = Transcript(server.host, server.ports["smtp"])
    reply = extra.reply()
    assert (reply.code, reply.text.split()[0]) == (421, "4.7.0")
    assert extra.closed()
    sessions[0].cmd("QUIT", 221)
    assert sessions[0].closed()
    # The slot is free again once the server has seen the close.
    for _ in range(50):
        again = Transcript(server.host, server.ports["smtp"])
        if again.reply().code == 220:
            break
        again.close()
    else:
        raise AssertionError("slot never freed")
    # QUIT, not a bare close: the slots are free once 221 is read (the session core gives a
    # slot back when QUIT is answered), so the next test's connection finds them free
    # instead of racing the server's handling of three closes (it got 421 once).
    for t in sessions[1:] + [again]:
        t.cmd("QUIT", 221)
        assert t.closed()


def test_message_rate_per_ip(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    for _ in range(3):
        t.cmd("MAIL FROM:<a@remote.example>", 250)
        t.cmd("RSET", 250)
    reply = t.cmd("MAIL FROM:<a@remote.example>", 451)
    assert reply.text.startswith("4.7.1")
    t.close()


def test_message_rate_per_user(server: MaildServer) -> None:
    plain = base64.b64encode(b"\0alice@example.test\0alice-secret").decode()
    for allowed in (2, 0):
        t = Transcript(server.host, server.ports["submissions"], implicit_tls=True,
                       cafile=server.cafile)
        t.greeting()
        t.cmd("EHLO client.example", 250)
        t.cmd(f"AUTH PLAIN {plain}", 235)
        for _ in range(allowed):
            t.cmd("MAIL FROM:<alice@example.test>", 250)
            t.cmd("RSET", 250)
        t.cmd("MAIL FROM:<alice@example.test>", 451)  # the bucket is per user, not session
        t.close()


def test_command_timeout(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    reply = t.reply()  # nothing sent: the server gives up after command_timeout
    assert (reply.code, reply.text.split()[0]) == (421, "4.4.2")
    assert t.closed()
