"""Submission (RFC 6409): sender ownership, Date/Message-ID, local delivery, the outbound
queue and the copy in Sent."""

from __future__ import annotations

import smtplib
import ssl
import subprocess

import pytest

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages, queue_entries

# Remote recipients must stay in the queue for these tests to inspect: with no DNS server
# answering (nothing listens on the discard port) every delivery attempt is deferred.
MAILD_OVERRIDES = {"dns": {"nameservers": ["127.0.0.1:9"], "timeout": 1.0}}


@pytest.fixture(scope="module", autouse=True)
def aliases(server: MaildServer) -> None:
    server.cli("alias", "add", "alice.liddell@example.test", "alice@example.test", check=True)


@pytest.fixture
def alice(submission: Transcript) -> Transcript:
    submission.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABhbGljZS1zZWNyZXQ=", 235)
    return submission


def test_envelope_sender_must_be_owned(alice: Transcript) -> None:
    reply = alice.cmd("MAIL FROM:<bob@example.test>", 553)
    assert reply.text.startswith("5.7.1")
    alice.cmd("MAIL FROM:<>", 553)
    alice.cmd("MAIL FROM:<alice@other.example>", 553)
    alice.cmd("MAIL FROM:<Alice.Liddell@example.test>", 250)  # own alias, any case


def test_from_header_must_be_owned(alice: Transcript, server: MaildServer) -> None:
    reply = alice.message("alice@example.test", ["bob@example.test"],
                          b"From: Bob <bob@example.test>\r\nSubject: forged\r\n\r\nx\r\n")
    assert (reply.code, reply.text.split()[0]) == (553, "5.7.1")
    reply = alice.message("alice@example.test", ["bob@example.test"],
                          b"Subject: no from\r\n\r\nx\r\n")
    assert (reply.code, reply.text.split()[0]) == (554, "5.6.0")  # RFC 5322 §3.6
    assert not [m for m in messages(server, "bob@example.test") if b"Subject: forged" in m]


@pytest.mark.parametrize("field", ["Sender", "Resent-From", "Resent-Sender"])
def test_originator_fields_must_be_owned(alice: Transcript, server: MaildServer,
                                         field: str) -> None:
    """Issue 15 item 9: every originator field (RFC 5322 §3.6.2, §3.6.6) is checked like
    From; bob's ENVELOPE must never show him as the sender of alice's message."""
    forged = (f"From: alice@example.test\r\n{field}: Bob <bob@example.test>\r\n"
              f"Subject: forged {field}\r\n\r\nx\r\n").encode()
    reply = alice.message("alice@example.test", ["bob@example.test"], forged)
    assert (reply.code, reply.text) == (
        553, f"5.7.1 {field}: header address not owned by the authenticated user")
    several = (f"From: alice@example.test\r\n{field}: alice@example.test, bob@example.test\r\n"
               f"Subject: forged {field}\r\n\r\nx\r\n").encode()
    assert alice.message("alice@example.test", ["bob@example.test"], several).code == 553
    assert not [m for m in messages(server, "bob@example.test") if b"Subject: forged" in m]
    own = (f"From: alice@example.test\r\n{field}: Alice <Alice.Liddell@example.test>\r\n"
           f"Subject: own {field}\r\n\r\nx\r\n").encode()
    assert alice.message("alice@example.test", ["bob@example.test"], own).code == 250


def test_local_remote_and_sent(alice: Transcript, server: MaildServer) -> None:
    body = b"From: Alice <alice.liddell@example.test>\r\nTo: bob@example.test\r\nSubject: mixed\r\n\r\nhi\r\n"
    reply = alice.message("alice@example.test",
                          ["bob@example.test", "carol@remote.example", "dave@remote.example",
                           "erin@elsewhere.example"], body)
    assert reply.code == 250
    (to_bob,) = [m for m in messages(server, "bob@example.test") if b"Subject: mixed" in m]
    assert b"Return-Path: <alice@example.test>" in to_bob
    assert b"with ESMTPSA" in to_bob
    # Date and Message-ID were added.
    assert b"\r\nDate: " in to_bob and b"\r\nMessage-ID: <" in to_bob
    (sent,) = [m for m in messages(server, "alice@example.test", "Sent") if b"Subject: mixed" in m]
    assert sent.endswith(body)
    assert b"Delivered-To" not in sent
    entries = [e for e in queue_entries(server) if e["sender"] == "alice@example.test"]
    by_domain = {e["domain"]: sorted(r["address"] for r in e["recipients"]) for e in entries}
    assert by_domain == {"remote.example": ["carol@remote.example", "dave@remote.example"],
                         "elsewhere.example": ["erin@elsewhere.example"]}


def test_bare_lf_message_is_told_bare_lf(alice: Transcript, server: MaildServer) -> None:
    """A client that sends Unix line endings: thousands of octets without a CRLF. The
    refusal names the bare LF (RFC 5321 §2.3.8), not a line longer than 1000 octets."""
    body = b"From: alice@example.test\nSubject: unix endings\n\n" + b"".join(
        b"line %d ends in a bare LF\n" % i for i in range(100))
    reply = alice.message("alice@example.test", ["bob@example.test"], body)
    assert (reply.code, reply.text.split()[0]) == (550, "5.6.0")
    assert "bare" in reply.text and "LF" in reply.text and "longer" not in reply.text
    alice.cmd("NOOP", 250)
    assert not [m for m in messages(server, "bob@example.test") if b"unix endings" in m]


def test_existing_message_id_kept(alice: Transcript, server: MaildServer) -> None:
    body = (b"From: alice@example.test\r\nMessage-ID: <keep@example.test>\r\n"
            b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nSubject: keep\r\n\r\nx\r\n")
    assert alice.message("alice@example.test", ["bob@example.test"], body).code == 250
    (stored,) = [m for m in messages(server, "bob@example.test") if b"Subject: keep" in m]
    assert stored.count(b"Message-ID:") == 1 and stored.count(b"\r\nDate:") == 1


def test_swaks_submission(server: MaildServer) -> None:
    result = subprocess.run(
        ["swaks", "--server", f"{server.host}:{server.ports['submission']}", "--tls",
         "--tls-ca-path", str(server.cafile), "--tls-verify", "--tls-sni", "localhost",
         "--auth", "LOGIN", "--auth-user", "bob@example.test", "--auth-password", "bob-secret",
         "--from", "bob@example.test", "--to", "alice@example.test",
         "--header", "Subject: swaks submission"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [m for m in messages(server, "alice@example.test") if b"swaks submission" in m]


def test_smtplib_send_message(server: MaildServer) -> None:
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=10) as client:
        client.starttls(context=context)
        client.login("bob@example.test", "bob-secret")
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("alice@example.test", ["alice@example.test"], b"From: x\r\n\r\n")
        client.sendmail("bob@example.test", ["alice@example.test"],
                        b"From: bob@example.test\r\nSubject: smtplib submission\r\n\r\nx\r\n")
    assert [m for m in messages(server, "alice@example.test") if b"smtplib submission" in m]
