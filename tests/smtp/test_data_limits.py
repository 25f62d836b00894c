"""Limits inside DATA: the session reads to the end of data before answering, and
never runs message content as commands."""

from __future__ import annotations

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages

MAILD_OVERRIDES = {"smtp": {"max_message_size": 100_000, "max_recipients": 3}}


def _start(server: MaildServer) -> Transcript:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    t.cmd("RCPT TO:<alice@example.test>", 250)
    t.cmd("DATA", 354)
    return t


def test_long_line_then_commands_in_next_packet(server: MaildServer) -> None:
    t = _start(server)
    t.send(b"From: a@remote.example\r\nSubject: longline\r\n\r\n" + b"x" * 20_000)
    t.send(b"\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    t.send(b"From: a@remote.example\r\nSubject: longline injected\r\n\r\nevil\r\n.\r\n")
    reply = t.reply()
    assert (reply.code, reply.text.split()[0]) == (550, "5.6.0")
    t.cmd("NOOP", 250)  # the first reply after the data is to our own next command
    assert not [m for m in messages(server, "bob@example.test") if b"longline" in m]
    assert not [m for m in messages(server, "alice@example.test") if b"longline" in m]


def test_line_of_exactly_1000_octets_is_fine(server: MaildServer) -> None:
    t = _start(server)
    t.send(b"From: a@remote.example\r\nSubject: limit\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")
    assert t.reply().code == 250
    t = _start(server)
    t.send(b"From: a@remote.example\r\nSubject: limit+1\r\n\r\n" + b"y" * 999 + b"\r\n.\r\n")
    assert t.reply().code == 550


def test_oversize_message_read_to_the_end(server: MaildServer) -> None:
    t = _start(server)
    line = b"z" * 78 + b"\r\n"
    t.send(b"From: a@r.example\r\nSubject: huge\r\n\r\n" + line * 2000 + b"RSET\r\nQUIT\r\n" + line * 10 + b".\r\n")
    reply = t.reply()
    assert (reply.code, reply.text) == (552, "5.3.4 Message size exceeds fixed maximum message size")
    t.cmd("NOOP", 250)
    assert not [m for m in messages(server, "alice@example.test") if b"Subject: huge" in m]


def test_declared_size_over_limit(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    assert "SIZE 100000" in t.cmd("EHLO client.example", 250).lines
    assert t.cmd("MAIL FROM:<a@remote.example> SIZE=100001", 552).text.startswith("5.3.4")
    t.cmd("MAIL FROM:<a@remote.example> SIZE=99999", 250)


def test_too_many_recipients(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    for _ in range(3):
        t.cmd("RCPT TO:<alice@example.test>", 250)
    assert t.cmd("RCPT TO:<bob@example.test>", 452).text == "4.5.3 Too many recipients"
    t.cmd("DATA", 354)
    t.send(b"From: a@remote.example\r\nSubject: three\r\n\r\nok\r\n.\r\n")
    assert t.reply().code == 250
