"""SPF (RFC 7208) through pyspf and the resolver service, against the real DNS server."""

from __future__ import annotations

import pytest

from maild.dns import Resolver
from maild.mailauth.spf import check_sync
from tests.fixtures.dns import DnsZone

CLIENT = "192.0.2.10"


def spf(resolver: Resolver, mail_from: str, ip: str = CLIENT, helo: str = "client.example.net"):
    return check_sync(resolver, ip, mail_from, helo, "mx.example.test")


@pytest.mark.parametrize(("record", "expected"), [
    (f"v=spf1 ip4:{CLIENT} -all", "pass"),
    ("v=spf1 ip4:198.51.100.0/24 -all", "fail"),
    ("v=spf1 ip4:198.51.100.0/24 ~all", "softfail"),
    ("v=spf1 ?all", "neutral"),
    ("v=spf1 ip4:198.51.100.1 bogus:mechanism -all", "permerror"),
])
def test_results(dns_zone: DnsZone, resolver: Resolver, record: str, expected: str) -> None:
    dns_zone.set("example.org", "TXT", record)
    result = spf(resolver, "alice@example.org")
    assert (result.result, result.scope, result.domain) == (expected, "mailfrom", "example.org")


def test_no_record_is_none(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "some other text record")
    assert spf(resolver, "alice@example.org").result == "none"
    assert spf(resolver, "alice@nonexistent.example.org").result == "none"


def test_two_records_are_permerror(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 -all", "v=spf1 +all")  # RFC 7208 §4.5
    assert spf(resolver, "alice@example.org").result == "permerror"


def test_a_and_mx_mechanisms(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 mx a:relay.example.org -all")
    dns_zone.set("example.org", "MX", "10 mx.example.org")
    dns_zone.set("mx.example.org", "A", "192.0.2.20")
    dns_zone.set("relay.example.org", "A", "192.0.2.30")
    assert spf(resolver, "a@example.org", ip="192.0.2.20").result == "pass"
    assert spf(resolver, "a@example.org", ip="192.0.2.30").result == "pass"
    assert spf(resolver, "a@example.org", ip="192.0.2.40").result == "fail"


def test_include(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 include:_spf.provider.example -all")
    dns_zone.set("_spf.provider.example", "TXT", f"v=spf1 ip4:{CLIENT} -all")
    assert spf(resolver, "alice@example.org").result == "pass"
    assert spf(resolver, "alice@example.org", ip="198.51.100.9").result == "fail"


def test_include_of_missing_record_is_permerror(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 include:gone.example -all")  # RFC 7208 §5.2
    assert spf(resolver, "alice@example.org").result == "permerror"


def test_redirect(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 redirect=_spf.example.net")
    dns_zone.set("_spf.example.net", "TXT", f"v=spf1 ip4:{CLIENT} ~all")
    assert spf(resolver, "alice@example.org").result == "pass"
    assert spf(resolver, "alice@example.org", ip="198.51.100.9").result == "softfail"


def test_ten_lookup_limit(dns_zone: DnsZone, resolver: Resolver) -> None:
    # RFC 7208 §4.6.4: the 11th DNS-querying term is a permerror
    for i in range(11):
        dns_zone.set(f"l{i}.example.org", "TXT", f"v=spf1 include:l{i + 1}.example.org -all")
    dns_zone.set("l11.example.org", "TXT", f"v=spf1 ip4:{CLIENT} -all")
    dns_zone.set("ten.example.org", "TXT", "v=spf1 include:l2.example.org -all")  # 10 lookups
    assert spf(resolver, "a@l0.example.org").result == "permerror"
    assert spf(resolver, "a@ten.example.org").result == "pass"


def test_void_lookup_limit(dns_zone: DnsZone, resolver: Resolver) -> None:
    # RFC 7208 §4.6.4: more than two lookups answering NXDOMAIN/no data are a permerror
    dns_zone.set("example.org", "TXT",
                 "v=spf1 a:v1.example.org a:v2.example.org a:v3.example.org ip4:192.0.2.10 -all")
    dns_zone.set("two.example.org", "TXT",
                 "v=spf1 a:v1.example.org a:v2.example.org ip4:192.0.2.10 -all")
    result = spf(resolver, "alice@example.org")
    assert result.result == "permerror" and "oid" in result.explanation
    assert spf(resolver, "alice@two.example.org").result == "pass"


def test_dns_timeout_is_temperror(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.timeout("example.org")
    assert spf(resolver, "alice@example.org").result == "temperror"
    dns_zone.set("inc.example.org", "TXT", "v=spf1 include:slow.example.net -all")
    dns_zone.timeout("slow.example.net")
    assert spf(resolver, "alice@inc.example.org").result == "temperror"


def test_null_sender_checks_helo(dns_zone: DnsZone, resolver: Resolver) -> None:
    # RFC 7208 §2.4: with MAIL FROM:<> the HELO identity is checked
    dns_zone.set("client.example.net", "TXT", f"v=spf1 ip4:{CLIENT} -all")
    result = spf(resolver, "", helo="client.example.net")
    assert (result.result, result.scope, result.identity) == ("pass", "helo", "client.example.net")
    assert spf(resolver, "", ip="198.51.100.9", helo="client.example.net").result == "fail"
    assert spf(resolver, "", helo="[192.0.2.10]").result == "none"


def test_ipv6_client(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 ip6:2001:db8::/32 -all")
    assert spf(resolver, "a@example.org", ip="2001:db8::25").result == "pass"
    assert spf(resolver, "a@example.org", ip="2001:db9::25").result == "fail"
