"""STARTTLS (RFC 3207): pipelined injection is discarded, the session starts afresh."""

from __future__ import annotations

import smtplib
import ssl

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages


def test_command_pipelined_behind_starttls_is_discarded(server: MaildServer) -> None:
    """CVE-2011-0411: plaintext injected in the STARTTLS packet must never run in TLS."""
    t = Transcript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.send(b"STARTTLS\r\nMAIL FROM:<evil@remote.example>\r\nRCPT TO:<alice@example.test>\r\n")
    assert t.reply().code == 220
    t.sock = t._wrap(t.sock)
    # Nothing of the injection may answer inside TLS: the first reply is to our EHLO.
    reply = t.cmd("EHLO client.example", 250)
    assert reply.lines[0].startswith("mx.example.test Hello")
    assert "STARTTLS" not in reply.lines
    # And the injected MAIL did not open a transaction.
    t.cmd("RCPT TO:<alice@example.test>", 503)
    t.cmd("MAIL FROM:<a@remote.example>", 250)


def test_ehlo_state_is_reset_after_tls(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.starttls()
    assert t.cmd("MAIL FROM:<a@remote.example>", 503).text == "5.5.1 Send EHLO first"
    t.cmd("EHLO client.example", 250)
    t.cmd("STARTTLS", 503)  # already active


def test_starttls_not_allowed_in_a_transaction(mx: Transcript) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("STARTTLS", 503)


def test_smtplib_starttls_delivery_records_tls_in_received(server: MaildServer) -> None:
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=10) as client:
        client.starttls(context=context)
        client.sendmail("x@remote.example", ["bob@example.test"],
                        b"From: x@remote.example\r\nSubject: over tls\r\n\r\nsecret\r\n")
    stored = [m for m in messages(server, "bob@example.test") if b"Subject: over tls" in m]
    assert len(stored) == 1
    received = stored[0].split(b"Received: ", 1)[1].split(b"Subject:")[0]
    assert b"with ESMTPS" in received
    assert b"using TLSv1.3 with cipher TLS_" in received
