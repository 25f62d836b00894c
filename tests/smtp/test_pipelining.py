"""PIPELINING (RFC 2920): whole command groups in one packet, replies in order."""

from __future__ import annotations

import socket

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages


def test_transaction_group_in_one_packet(mx: Transcript, server: MaildServer) -> None:
    mx.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
            b"RCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert [mx.reply().code for _ in range(5)] == [250, 250, 550, 250, 354]
    mx.send(b"From: a@remote.example\r\nSubject: pipegroup one\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@remote.example>\r\n"
            b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    assert [mx.reply().code for _ in range(4)] == [250, 250, 250, 354]
    mx.send(b"From: a@remote.example\r\nSubject: pipegroup two\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert [mx.reply().code for _ in range(2)] == [250, 221]
    assert len([m for m in messages(server, "alice@example.test") if b"pipegroup" in m]) == 1
    assert len([m for m in messages(server, "bob@example.test") if b"pipegroup" in m]) == 2


def test_all_recipients_failed_then_data(mx: Transcript) -> None:
    mx.send(b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n")
    assert [mx.reply().code for _ in range(3)] == [250, 550, 554]
    mx.cmd("RSET", 250)


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_flood_without_reading_is_bounded(server: MaildServer) -> None:
    """A client that sends commands without end and never reads the replies: the server
    stops reading once its replies back up, so its memory does not grow."""
    assert server.process is not None
    before = _rss_kb(server.process.pid)
    t = Transcript(server.host, server.ports["smtp"])
    t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    t.greeting()
    t.sock.settimeout(0.5)
    sent = 0
    chunk = b"NOOP\r\n" * 10_000
    try:
        for _ in range(1000):  # up to 60 MB of commands
            sent += t.sock.send(chunk)
    except TimeoutError:
        pass
    assert sent < 1000 * len(chunk), "server kept reading a client that never reads"
    grown = _rss_kb(server.process.pid) - before
    assert grown < 64 * 1024, f"daemon grew by {grown} kB"
    t.close()
    fresh = Transcript(server.host, server.ports["smtp"])
    fresh.greeting()
    fresh.cmd("NOOP", 250)
