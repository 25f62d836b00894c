"""250 means on disk: kill -9 right after the reply loses nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.smtp.conftest import Transcript, messages, queue_entries


# workers = 2: the kill takes the supervisor and both workers (issue 21).
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_after_250_loses_nothing(maild_factory: Callable[..., MaildServer], workers: int) -> None:
    server = maild_factory(server={"workers": workers})
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.example", 250)
    ids = []
    for i in range(20):
        t.cmd("MAIL FROM:<a@remote.example>", 250)
        t.cmd("RCPT TO:<alice@example.test>", 250)
        t.cmd("RCPT TO:<bob@example.test>", 250)
        t.cmd("DATA", 354)
        t.send(b"From: a@remote.example\r\nSubject: durable %d\r\n\r\nbody\r\n.\r\n" % i)
        reply = t.reply()
        assert reply.code == 250
        ids.append(reply.text.rsplit(" ", 1)[1])
    server.kill()  # SIGKILL the moment the last 250 is read
    for user in ("alice@example.test", "bob@example.test"):
        stored = messages(server, user)
        for i, queue_id in enumerate(ids):
            found = [m for m in stored if b"Subject: durable %d\r\n" % i in m]
            assert len(found) == 1 and queue_id.encode() in found[0]
    server.start()


def test_kill_after_submission_250_keeps_queue_and_sent(maild_factory: Callable[..., MaildServer],
                                                        dns_zone: DnsZone) -> None:
    # The queue runner is woken by the enqueue and could finish the entry (NXDOMAIN: a
    # bounce) before the kill lands, a race this test could not tell from a loss; the
    # destination's DNS never answers, so the entry is still in flight when the kill comes.
    dns_zone.timeout("remote.example")
    server = maild_factory()
    t = Transcript(server.host, server.ports["submissions"], implicit_tls=True, cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.cmd("AUTH PLAIN AGJvYkBleGFtcGxlLnRlc3QAYm9iLXNlY3JldA==", 235)
    reply = t.message("bob@example.test", ["carol@remote.example", "alice@example.test"],
                      b"From: bob@example.test\r\nSubject: queued\r\n\r\nx\r\n")
    assert reply.code == 250
    server.kill()
    assert [e["domain"] for e in queue_entries(server)] == ["remote.example"]
    assert [m for m in messages(server, "alice@example.test") if b"Subject: queued" in m]
    assert [m for m in messages(server, "bob@example.test", "Sent") if b"Subject: queued" in m]
    server.start()
