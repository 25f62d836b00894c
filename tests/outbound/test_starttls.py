"""STARTTLS (RFC 3207) by policy: opportunistic uses it when offered, required defers
when it is not, none never uses it."""

from __future__ import annotations

from collections.abc import Callable

from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone


def test_starttls_offered_is_used(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2", starttls=True)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = message()
    outbound.enqueue(raw, "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert got.tls is True and got.content == raw
    assert mx.handler.sessions == 2  # EHLO again after TLS (RFC 3207 §4.2)


def test_required_tls_without_starttls_is_deferred(outbound_factory: Callable[..., Outbound],
                                                   remotes: Remotes, dns_zone: DnsZone) -> None:
    out = outbound_factory(tls_required_domains=[REMOTE])
    mx = remotes.start("127.0.0.2")  # no STARTTLS
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    assert mx.messages == []
    (entry,) = out.entries()
    assert entry["recipients"][0]["state"] == "pending"
    assert entry["last_error"] == "451 4.7.4 TLS is required but was not offered"


def test_required_tls_with_starttls_delivers(outbound_factory: Callable[..., Outbound],
                                             remotes: Remotes, dns_zone: DnsZone) -> None:
    out = outbound_factory(tls_policy="required")
    mx = remotes.start("127.0.0.2", starttls=True)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    assert [m.tls for m in mx.messages] == [True]


def test_policy_none_stays_in_clear(outbound_factory: Callable[..., Outbound],
                                    remotes: Remotes, dns_zone: DnsZone) -> None:
    out = outbound_factory(tls_disabled_domains=[REMOTE])
    mx = remotes.start("127.0.0.2", starttls=True)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    assert [m.tls for m in mx.messages] == [False]
