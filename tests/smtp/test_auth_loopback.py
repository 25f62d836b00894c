"""allow_plaintext_auth_on_loopback: AUTH without TLS, for loopback clients only."""

from __future__ import annotations

import smtplib

from tests.conftest import MaildServer
from tests.smtp.conftest import messages

MAILD_OVERRIDES = {"submission": {"allow_plaintext_auth_on_loopback": True}}


def test_plaintext_auth_on_loopback(server: MaildServer) -> None:
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("auth") and client.has_extn("starttls")
        client.login("alice@example.test", "alice-secret")
        client.sendmail("alice@example.test", ["bob@example.test"],
                        b"From: alice@example.test\r\nSubject: loopback plain\r\n\r\nx\r\n")
    (stored,) = [m for m in messages(server, "bob@example.test") if b"loopback plain" in m]
    assert b"with ESMTPA" in stored
