"""Local delivery over the MX port: one and many users, aliases, plus-addressing, trace
headers, one blob for many recipients."""

from __future__ import annotations

import subprocess

import pytest

from maild.store import Store
from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, messages


@pytest.fixture(scope="module", autouse=True)
def aliases(server: MaildServer) -> None:
    server.cli("alias", "add", "team@example.test", "alice@example.test", "bob@example.test",
               check=True)
    server.cli("alias", "add", "boss@example.test", "alice@example.test", check=True)


def _find(server: MaildServer, user: str, marker: bytes) -> list[bytes]:
    return [m for m in messages(server, user) if marker in m]


def test_one_recipient(mx: Transcript, server: MaildServer) -> None:
    reply = mx.message("sender@remote.example", ["alice@example.test"],
                       b"From: sender@remote.example\r\nSubject: one\r\n\r\nHello Alice\r\n")
    assert reply.code == 250 and reply.text.startswith("2.0.0 Ok: queued as ")
    queue_id = reply.text.rsplit(" ", 1)[1]
    (stored,) = _find(server, "alice@example.test", b"Subject: one")
    header, body = stored.split(b"\r\n\r\n", 1)
    assert body == b"Hello Alice\r\n"
    lines = header.split(b"\r\n")
    assert lines[0] == b"Return-Path: <sender@remote.example>"
    assert lines[1] == b"Delivered-To: alice@example.test"
    assert lines[2].startswith(b"Received: from client.example ([127.0.0.1])")
    assert f"with ESMTP id {queue_id}".encode() in header
    assert b"for <alice@example.test>" in header


def test_many_recipients_share_one_blob(mx: Transcript, server: MaildServer) -> None:
    reply = mx.message("sender@remote.example", ["alice@example.test", "bob@example.test"],
                       b"From: a@remote.example\r\nSubject: many\r\n\r\nHello both\r\n")
    assert reply.code == 250
    (for_alice,) = _find(server, "alice@example.test", b"Subject: many")
    (for_bob,) = _find(server, "bob@example.test", b"Subject: many")
    assert b"Delivered-To: alice@example.test" in for_alice
    assert b"Delivered-To: bob@example.test" in for_bob
    assert b" for <" not in for_alice  # several recipients: none disclosed
    store = Store(server.data_dir, server.config.store)
    try:
        blobs = set()
        for user in ("alice@example.test", "bob@example.test"):
            inbox = store.mailbox(user, "INBOX")
            blobs |= {meta.blob for meta in store.messages(user, inbox.id)
                      if b"Subject: many" in store.read(user, inbox.id, meta.uid)}
    finally:
        store.close()
    assert len(blobs) == 1


def test_alias_and_plus_address(mx: Transcript, server: MaildServer) -> None:
    reply = mx.message("sender@remote.example",
                       ["team@example.test", "boss@example.test", "bob+lists@example.test"],
                       b"From: a@remote.example\r\nSubject: aliases\r\n\r\nto the team\r\n")
    assert reply.code == 250
    # alice is reached twice (team, boss) but gets one copy; bob twice (team, +lists): one.
    assert len(_find(server, "alice@example.test", b"Subject: aliases")) == 1
    assert len(_find(server, "bob@example.test", b"Subject: aliases")) == 1


def test_unknown_user_and_case(mx: Transcript) -> None:
    reply = mx.cmd("MAIL FROM:<>", 250)
    assert reply.text == "2.1.0 Ok"
    assert mx.cmd("RCPT TO:<nobody@example.test>", 550).text.startswith("5.1.1")
    mx.cmd("RCPT TO:<ALICE@Example.Test>", 250)
    mx.cmd("RCPT TO:<Postmaster>", 550)  # no postmaster alias in this directory


def test_null_sender_return_path(mx: Transcript, server: MaildServer) -> None:
    assert mx.message("", ["bob@example.test"], b"From: a@remote.example\r\nSubject: bounce\r\n\r\nDSN\r\n").code == 250
    (stored,) = _find(server, "bob@example.test", b"Subject: bounce")
    assert stored.startswith(b"Return-Path: <>\r\n")


def test_dot_stuffing_is_undone(mx: Transcript, server: MaildServer) -> None:
    body = b"From: a@remote.example\r\nSubject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"
    assert mx.message("a@remote.example", ["bob@example.test"], body).code == 250
    (stored,) = _find(server, "bob@example.test", b"Subject: dots")
    assert stored.endswith(b"\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n")


def test_swaks_delivery(server: MaildServer) -> None:
    result = subprocess.run(
        ["swaks", "--server", f"{server.host}:{server.ports['smtp']}", "--helo", "swaks.example",
         "--from", "swaks@remote.example", "--to", "alice@example.test,bob@example.test",
         "--header", "Subject: via swaks", "--body", "Hello from swaks"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    assert len(_find(server, "alice@example.test", b"Subject: via swaks")) == 1
    assert len(_find(server, "bob@example.test", b"Subject: via swaks")) == 1


def test_swaks_pipelining_and_starttls(server: MaildServer) -> None:
    result = subprocess.run(
        ["swaks", "--server", f"{server.host}:{server.ports['smtp']}", "--pipeline", "--tls",
         "--tls-ca-path", str(server.cafile), "--tls-verify",
         "--tls-sni", "localhost", "--helo", "swaks.example", "--from", "swaks@remote.example",
         "--to", "bob@example.test", "--header", "Subject: swaks pipelined tls"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    (stored,) = _find(server, "bob@example.test", b"Subject: swaks pipelined tls")
    assert b"with ESMTPS" in stored
