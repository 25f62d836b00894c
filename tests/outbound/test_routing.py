"""Routing (RFC 5321 §5.1, RFC 7505): MX preference, fallback to the next MX, implicit
MX, null MX, a domain that does not exist."""

from __future__ import annotations

import random
from collections.abc import Callable

from maild.queue.runner import order_mx
from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone
from tests.outbound.dsn_helpers import parse_dsn


def test_order_by_preference_random_among_equals() -> None:
    records = [(20, "c"), (10, "a1"), (10, "a2"), (10, "a3"), (30, "d"), (20, "b")]
    orders = {tuple(order_mx(records, random.Random(seed))) for seed in range(50)}
    for order in orders:
        assert set(order[:3]) == {"a1", "a2", "a3"}
        assert set(order[3:5]) == {"b", "c"} and order[5] == "d"
    assert len({o[:3] for o in orders}) > 1  # equal preferences really are shuffled


def test_preferred_mx_down_next_used(outbound: Outbound, remotes: Remotes,
                                     dns_zone: DnsZone) -> None:
    backup = remotes.start("127.0.0.3")
    # 127.0.0.2 has nothing listening on the port: connection refused.
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"), (20, "mx2.remote.test", "127.0.0.3"))
    outbound.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    assert [m.rcpt_tos for m in backup.messages] == [[f"carol@{REMOTE}"]]
    assert outbound.entries() == []


def test_preferred_mx_tempfails_next_used(outbound: Outbound, remotes: Remotes,
                                          dns_zone: DnsZone) -> None:
    primary, backup = remotes.start("127.0.0.2"), remotes.start("127.0.0.3")
    primary.handler.rcpt_replies[f"carol@{REMOTE}"] = "450 4.2.1 mailbox busy"
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"), (20, "mx2.remote.test", "127.0.0.3"))
    outbound.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    # A recipient's 4xx is that recipient's result for this attempt: retried later, not
    # sent to the backup (which would take it only to relay it to the primary).
    assert primary.messages == [] and backup.messages == []
    (entry,) = outbound.entries()
    assert entry["recipients"][0]["state"] == "pending"
    assert entry["last_error"] == "450 4.2.1 mailbox busy"


def test_implicit_mx(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    dns_zone.set(REMOTE, "A", "127.0.0.2")  # no MX record: the domain itself
    outbound.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    assert len(mx.messages) == 1


def test_null_mx_bounces_at_once(outbound: Outbound, dns_zone: DnsZone) -> None:
    dns_zone.set(REMOTE, "MX", "0 .")
    outbound.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    assert outbound.entries() == []
    (report,) = outbound.inbox("alice@example.test")
    assert report.startswith(b"Return-Path: <>\r\n")
    _, text, (rcpt,) = parse_dsn(report)
    assert rcpt["Status"] == "5.1.10" and rcpt["Action"] == "failed"
    assert "null MX" in text


def test_domain_without_mx_or_address_bounces(outbound: Outbound, dns_zone: DnsZone) -> None:
    outbound.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    assert outbound.entries() == []
    _, _, (rcpt,) = parse_dsn(outbound.inbox("alice@example.test")[0])
    assert rcpt["Status"] == "5.1.2"


def test_dns_timeout_defers(outbound_factory: Callable[..., Outbound], dns_zone: DnsZone) -> None:
    out = outbound_factory(dns_timeout=0.3)
    dns_zone.timeout(REMOTE)
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    (entry,) = out.entries()
    assert entry["recipients"][0]["state"] == "pending"
    assert entry["last_error"].startswith("451 4.4.3 DNS")
    assert out.inbox("alice@example.test") == []
    # it goes on failing until the queue gives up: the DSN says why in Diagnostic-Code
    out.clock.advance(5 * 24 * 3600)
    out.run()
    assert out.entries() == []
    msg, text, (rcpt,) = parse_dsn(out.inbox("alice@example.test")[0])
    assert rcpt["Status"] == "4.4.3" and "Remote-MTA" not in rcpt
    assert rcpt["Diagnostic-Code"].startswith("X-maild; DNS")
    # RFC 5322 §3.3: a time maild took itself is "+0000", never "-0000"
    for value in (msg["Date"], rcpt["Last-Attempt-Date"]):
        assert str(value).endswith("+0000"), value
