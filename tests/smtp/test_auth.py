"""AUTH PLAIN and LOGIN (RFC 4954) on the submission ports, only over TLS."""

from __future__ import annotations

import base64
import smtplib
import ssl
import time

import pytest

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_auth_not_offered_nor_accepted_before_tls(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["submission"], cafile=server.cafile)
    t.greeting()
    reply = t.cmd("EHLO client.example", 250)
    assert "STARTTLS" in reply.lines
    assert not any(line.startswith("AUTH") for line in reply.lines)
    plain = _b64("\0alice@example.test\0alice-secret")
    reply = t.cmd(f"AUTH PLAIN {plain}", 538)
    assert reply.text.startswith("5.7.11")
    t.starttls()
    reply = t.cmd("EHLO client.example", 250)
    assert "AUTH PLAIN LOGIN" in reply.lines and "STARTTLS" not in reply.lines
    assert t.cmd(f"AUTH PLAIN {plain}", 235).text == "2.7.0 Authentication successful"
    t.cmd(f"AUTH PLAIN {plain}", 503)


def test_auth_plain_with_challenge(submission: Transcript) -> None:
    assert submission.cmd("AUTH PLAIN", 334).text == ""
    submission.cmd(_b64("\0bob@example.test\0bob-secret"), 235)


def test_auth_login(submission: Transcript) -> None:
    assert submission.cmd("AUTH LOGIN", 334).text == _b64("Username:")
    assert submission.cmd(_b64("alice@example.test"), 334).text == _b64("Password:")
    submission.cmd(_b64("alice-secret"), 235)


def test_wrong_password_is_535_after_a_delay(submission: Transcript) -> None:
    started = time.monotonic()
    reply = submission.cmd(f"AUTH PLAIN {_b64(chr(0) + 'alice@example.test' + chr(0) + 'nope')}",
                           535)
    assert reply.text == "5.7.8 Authentication credentials invalid"
    reply = submission.cmd(f"AUTH PLAIN {_b64(chr(0) + 'nobody@example.test' + chr(0) + 'x')}",
                           535)
    assert time.monotonic() - started >= 0.2  # [auth] failure_delay in the test config
    submission.cmd("MAIL FROM:<alice@example.test>", 530)


@pytest.mark.parametrize("line,code", [
    ("AUTH CRAM-MD5", 504),
    ("AUTH PLAIN !!!", 501),
    (f"AUTH PLAIN {_b64('only-one-part')}", 501),
    (f"AUTH PLAIN {_b64('carol@example.test' + chr(0) + 'alice@example.test' + chr(0) + 'alice-secret')}",
     535),
])
def test_malformed_auth(submission: Transcript, line: str, code: int) -> None:
    submission.cmd(line, code)


def test_auth_cancelled(submission: Transcript) -> None:
    submission.cmd("AUTH LOGIN", 334)
    submission.cmd("*", 501)
    submission.cmd("AUTH PLAIN", 334)
    submission.cmd(b"not base64 !", 501)
    submission.cmd("NOOP", 250)


def test_smtplib_starttls_login(server: MaildServer) -> None:
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=10) as client:
        client.starttls(context=context)
        assert client.login("bob@example.test", "bob-secret")[0] == 235


def test_smtplib_refuses_without_tls(server: MaildServer) -> None:
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=10) as client:
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.login("bob@example.test", "bob-secret")


def test_implicit_tls_465(server: MaildServer) -> None:
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP_SSL(server.host, server.ports["submissions"], timeout=10,
                          context=context) as client:
        client.ehlo("client.example")
        assert not client.has_extn("starttls")
        assert client.login("alice@example.test", "alice-secret")[0] == 235
        client.sendmail("alice@example.test", ["bob@example.test"],
                        b"From: alice@example.test\r\nSubject: via 465\r\n\r\nhi\r\n")


def test_mx_port_has_no_auth(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.starttls()
    assert not any(x.startswith("AUTH") for x in t.cmd("EHLO client.example", 250).lines)
    t.cmd("AUTH PLAIN " + _b64("\0alice@example.test\0alice-secret"), 502)
