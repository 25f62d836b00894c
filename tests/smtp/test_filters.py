"""The filter chain hook points (docs/smtp.md): a real daemon whose chain is one policy
filter (tests/smtp/policy_daemon.py) answering at every phase."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, MaildServer
from tests.smtp.conftest import Transcript, messages

MAILD_OVERRIDES: dict[str, dict[str, object]] = {}  # its own daemon: swapped for the policy one


@pytest.fixture(scope="module")
def policy(server: MaildServer) -> Iterator[MaildServer]:
    server.stop()
    with open(server.log_path, "ab") as log:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "tests.smtp.policy_daemon", str(server.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(500):
        try:
            Transcript(server.host, server.ports["smtp"]).close()
            break
        except ConnectionRefusedError:
            if server.process.poll() is not None:
                raise RuntimeError(server.log()) from None
            time.sleep(0.02)
    yield server
    server.restart()  # back to the plain daemon for the shared teardown


def _session(server: MaildServer, helo: str = "good.example") -> Transcript:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd(f"EHLO {helo}", 250)
    return t


def test_helo_reject(policy: MaildServer) -> None:
    t = Transcript(policy.host, policy.ports["smtp"])
    t.greeting()
    assert t.cmd("EHLO bad.example", 550).text == "5.7.1 HELO name refused"
    t.cmd("MAIL FROM:<a@remote.example>", 503)  # not greeted
    t.cmd("EHLO good.example", 250)
    t.cmd("MAIL FROM:<a@remote.example>", 250)


def test_mail_from_tempfail_is_deferred(policy: MaildServer) -> None:
    t = _session(policy)
    assert t.cmd("MAIL FROM:<grey@remote.example>", 451).text == "4.7.1 Greylisted, try later"
    t.cmd("RCPT TO:<alice@example.test>", 503)  # no transaction was opened
    t.cmd("MAIL FROM:<a@remote.example>", 250)


def test_rcpt_reject_keeps_other_recipients(policy: MaildServer) -> None:
    t = _session(policy)
    t.cmd("MAIL FROM:<a@remote.example>", 250)
    t.cmd("RCPT TO:<bob+blocked@example.test>", 550)
    t.cmd("RCPT TO:<alice@example.test>", 250)


def test_data_reject(policy: MaildServer) -> None:
    t = _session(policy)
    reply = t.message("a@remote.example", ["alice@example.test"], b"From: a@r.example\r\nSubject: VIRUS\r\n\r\nx\r\n")
    assert (reply.code, reply.text) == (554, "5.7.1 Message refused by policy")
    assert not [m for m in messages(policy, "alice@example.test") if b"VIRUS" in m]


def test_headers_notes_and_folder(policy: MaildServer) -> None:
    t = _session(policy, helo="notes.example")
    assert t.message("a@remote.example", ["alice@example.test"],
                     b"From: a@remote.example\r\nSubject: ham\r\n\r\nx\r\n").code == 250
    # A second transaction in the same session still sees the connect/HELO notes.
    assert t.message("a@remote.example", ["alice@example.test"],
                     b"From: a@remote.example\r\nSubject: SPAM offer\r\n\r\nx\r\n").code == 250
    (ham,) = [m for m in messages(policy, "alice@example.test") if b"Subject: ham" in m]
    assert b"X-Policy: helo=notes.example ip=127.0.0.1\r\n" in ham
    assert ham.index(b"Received:") < ham.index(b"X-Policy:") < ham.index(b"Subject: ham")
    assert not [m for m in messages(policy, "alice@example.test") if b"SPAM offer" in m]
    (junk,) = [m for m in messages(policy, "alice@example.test", "Junk") if b"SPAM offer" in m]
    assert b"X-Spam: yes\r\n" in junk
