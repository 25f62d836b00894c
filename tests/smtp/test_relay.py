"""Never an open relay: every classic trick is refused to an unauthenticated client."""

from __future__ import annotations

import pytest

from tests.conftest import MaildServer
from tests.smtp.conftest import Transcript, queue_entries

TRICKS = [
    "user@other.example",
    "user%other.example@example.test",
    '"user@other.example"@example.test',
    "other.example!user@example.test",
    "@example.test:user@other.example",
    "@mx.example.test,@example.test:user@other.example",
    "user@[127.0.0.1]",
    "alice@[127.0.0.1]",
    "user@[IPv6:::1]",
    "alice%example.test@example.test",
    '"alice@example.test"@example.test',
    "user@other.example.",
]


@pytest.mark.parametrize("rcpt", TRICKS)
def test_relay_trick_refused(mx: Transcript, rcpt: str) -> None:
    mx.cmd("MAIL FROM:<spammer@remote.example>", 250)
    reply = mx.cmd(f"RCPT TO:<{rcpt}>")
    assert reply.code in (501, 554), reply
    if reply.code == 554:
        assert reply.text == "5.7.1 Relay access denied"
    mx.cmd("DATA", 554)  # nothing was accepted


def test_relay_refused_even_after_tls(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.starttls()
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<someone@remote.example>", 250)
    t.cmd("RCPT TO:<user@other.example>", 554)


def test_nothing_reached_the_queue(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("MAIL FROM:<spammer@remote.example>", 250)
    for rcpt in TRICKS:
        t.cmd(f"RCPT TO:<{rcpt}>")
    assert not [e for e in queue_entries(server) if e["sender"] == "spammer@remote.example"]


def test_submission_without_auth_cannot_relay(server: MaildServer) -> None:
    t = Transcript(server.host, server.ports["submission"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    assert t.cmd("MAIL FROM:<alice@example.test>", 530).text.startswith("5.7.0")
    t.starttls()
    t.cmd("EHLO client.example", 250)
    assert t.cmd("MAIL FROM:<alice@example.test>", 530).text == "5.7.0 Authentication required"
    t.cmd("RCPT TO:<user@other.example>", 503)
