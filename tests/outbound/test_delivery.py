"""Delivery through the queue runner (in this process, controllable clock) to real
aiosmtpd MXes found through the real DNS server."""

from __future__ import annotations

from maild.queue.wire import normalize_line_endings
from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone


def test_delivered_and_removed(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = message()
    outbound.enqueue(raw, "alice@example.test", [f"carol@{REMOTE}", f"dave@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert got.mail_from == "alice@example.test"
    assert got.rcpt_tos == [f"carol@{REMOTE}", f"dave@{REMOTE}"]
    assert got.content == raw
    assert outbound.entries() == []
    assert outbound.inbox("alice@example.test") == []  # no DSN


def test_bare_cr_and_lf_arrive_normalised(outbound: Outbound, remotes: Remotes,
                                          dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = message(body="bare LF\nbare CR\rboth\r\n.dot after LF\n.\r.\n\rend")
    outbound.enqueue(raw, "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert got.content == normalize_line_endings(raw)
    assert b"\r\n.dot after LF\r\n.\r\n.\r\n\r\nend\r\n" in got.content
