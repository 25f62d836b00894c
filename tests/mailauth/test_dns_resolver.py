"""The resolver service against the real DNS server: records, caching, temperror."""

from __future__ import annotations

import time

import pytest

from maild.dns import Resolver, TempError
from tests.fixtures.dns import DnsZone
from tests.fixtures.reactor import ReactorThread
from tests.mailauth.conftest import DNS_TIMEOUT


def test_records_of_each_type(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "MX", "20 mx2.example.org", "10 mx1.example.org")
    dns_zone.set("mx1.example.org", "A", "192.0.2.1")
    dns_zone.set("mx1.example.org", "AAAA", "2001:db8::1")
    dns_zone.set("example.org", "TXT", "v=spf1 -all", "k" * 400)
    assert resolver.mx_sync("example.org") == [(10, "mx1.example.org"), (20, "mx2.example.org")]
    assert resolver.a_sync("mx1.example.org") == ["192.0.2.1"]
    assert resolver.aaaa_sync("mx1.example.org") == ["2001:db8::1"]
    # a TXT record longer than 255 octets arrives split and is joined again
    assert sorted(resolver.txt_sync("example.org")) == [b"k" * 400, b"v=spf1 -all"]


def test_null_mx_cname_and_absent_names(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("nomail.example.org", "MX", "0 .")  # RFC 7505
    dns_zone.set("www.example.org", "CNAME", "host.example.org")
    dns_zone.set("host.example.org", "A", "192.0.2.7")
    assert resolver.mx_sync("nomail.example.org") == [(0, ".")]
    assert resolver.a_sync("www.example.org") == ["192.0.2.7"]
    assert resolver.a_sync("missing.example.org") == []  # NXDOMAIN
    assert resolver.aaaa_sync("host.example.org") == []  # no data


def test_names_that_cannot_be_dns_names_have_no_records(resolver: Resolver) -> None:
    # From: domains are whatever the sender wrote; "From: @\u0080" made DMARC discovery raise.
    for name in ("_dmarc.\u0080", "a..example.org", "x" * 64 + ".example.org", "a." * 130 + "org"):
        assert resolver.txt_sync(name) == []


def test_timeout_is_temperror(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.timeout("slow.example.org")
    started = time.monotonic()
    with pytest.raises(TempError, match="timed out"):
        resolver.txt_sync("slow.example.org")
    assert time.monotonic() - started < DNS_TIMEOUT + 1.0


def test_servfail_is_temperror(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.servfail("broken.example.org")
    with pytest.raises(TempError):
        resolver.mx_sync("broken.example.org")


def test_cache_honours_ttl(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("cached.example.org", "A", "192.0.2.1", ttl=300)
    dns_zone.set("fresh.example.org", "A", "192.0.2.1", ttl=0)
    assert resolver.a_sync("cached.example.org") == ["192.0.2.1"]
    assert resolver.a_sync("fresh.example.org") == ["192.0.2.1"]
    dns_zone.set("cached.example.org", "A", "192.0.2.2", ttl=300)
    dns_zone.set("fresh.example.org", "A", "192.0.2.2", ttl=0)
    assert resolver.a_sync("cached.example.org") == ["192.0.2.1"]  # served from cache
    assert resolver.a_sync("fresh.example.org") == ["192.0.2.2"]  # TTL 0: asked again


def test_deferred_api_from_the_reactor(dns_zone: DnsZone, resolver: Resolver, loop: ReactorThread) -> None:
    dns_zone.set("example.org", "MX", "10 mx.example.org")
    dns_zone.set("mx.example.org", "A", "192.0.2.1")
    dns_zone.set("mx.example.org", "AAAA", "2001:db8::1")
    dns_zone.set("example.org", "TXT", "hello")
    assert loop.call(resolver.mx, "example.org") == [(10, "mx.example.org")]
    assert loop.call(resolver.a, "mx.example.org") == ["192.0.2.1"]
    assert loop.call(resolver.aaaa, "mx.example.org") == ["2001:db8::1"]
    assert loop.call(resolver.txt, "example.org") == [b"hello"]
    dns_zone.timeout("slow.example.org")
    with pytest.raises(TempError):
        loop.call(resolver.a, "slow.example.org")

