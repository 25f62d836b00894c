"""SMTPUTF8 (RFC 6531): internationalised addresses only with the parameter."""

from __future__ import annotations

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages


def test_utf8_sender_needs_the_parameter(mx: Transcript, server: MaildServer) -> None:
    reply = mx.cmd("MAIL FROM:<jörg@bücher.example>".encode(), 553)
    assert reply.text.startswith("5.6.7")
    mx.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME".encode(), 250)
    mx.cmd("RCPT TO:<alice@example.test>", 250)
    mx.cmd("DATA", 354)
    mx.send("Subject: grüße\r\nFrom: jörg@bücher.example\r\n\r\nÜmlaut body\r\n.\r\n".encode())
    assert mx.reply().code == 250
    (stored,) = [m for m in messages(server, "alice@example.test") if "grüße".encode() in m]
    assert "Return-Path: <jörg@bücher.example>".encode() in stored
    assert b"with UTF8SMTP id" in stored


def test_utf8_recipient_without_parameter(mx: Transcript) -> None:
    mx.cmd("MAIL FROM:<a@remote.example>", 250)
    mx.cmd("RCPT TO:<jörg@example.test>".encode(), 553)
    mx.cmd("RSET", 250)
    mx.cmd("MAIL FROM:<a@remote.example> SMTPUTF8", 250)
    mx.cmd("RCPT TO:<jörg@example.test>".encode(), 550)  # well-formed, but no such user
