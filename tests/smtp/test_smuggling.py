"""SMTP smuggling (CVE-2023-51764 class): a bare LF or CR never ends DATA, so a second
message hidden after it never exists."""

from __future__ import annotations

import pytest

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages

PAYLOADS = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r\r\n", b"\r\n\x00.\r\n",
            b"\r.\r", b"\n.\r"]


@pytest.mark.parametrize("payload", PAYLOADS, ids=[repr(p) for p in PAYLOADS])
def test_smuggled_message_never_exists(server: MaildServer, payload: bytes) -> None:
    marker = f"smuggle-{PAYLOADS.index(payload)}".encode()
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    t.cmd("RCPT TO:<alice@example.test>", 250)
    t.cmd("DATA", 354)
    smuggled = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n"
                b"From: admin@example.test\r\nSubject: " + marker + b" smuggled\r\n\r\nevil\r\n")
    t.send(b"From: a@remote.example\r\nSubject: " + marker + b" outer\r\n\r\nhello" + payload + smuggled + b".\r\n")
    reply = t.reply()
    # Either refused as a whole (bare CR/LF/NUL) ...
    assert reply.code == 550 and reply.text.startswith("5.6.0"), reply
    # ... and the session is in command mode right after the real end of data.
    t.cmd("NOOP", 250)
    t.cmd("QUIT", 221)
    for user in ("alice@example.test", "bob@example.test"):
        assert not [m for m in messages(server, user) if marker in m]


def test_smuggling_split_across_packets(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    t.cmd("RCPT TO:<alice@example.test>", 250)
    t.cmd("DATA", 354)
    t.send(b"From: a@remote.example\r\nSubject: split\r\n\r\nhello\r")
    t.send(b"\n.")
    t.send(b"\r")
    t.send(b"\nNOOP\r\n")
    assert t.reply().code == 250  # the end of data, split in three packets
    assert t.reply().code == 250  # NOOP
    assert len([m for m in messages(server, "alice@example.test") if b"Subject: split" in m]) == 1


def test_clean_message_after_refused_one(mx: Transcript, server: MaildServer) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<bob@example.test>", 250)
    mx.cmd("DATA", 354)
    mx.send(b"From: a@remote.example\r\nSubject: bare\r\n\r\nline\nline\r\n.\r\n")
    assert mx.reply().code == 550
    reply = mx.message("a@remote.example", ["bob@example.test"],
                       b"From: a@r.example\r\nSubject: clean one\r\n\r\nok\r\n")
    assert reply.code == 250
