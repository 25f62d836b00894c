"""ARC (RFC 8617) chain verification of a message sealed by a forwarder with dkimpy's
own ARC signer, and our Authentication-Results checked by an independent parser."""

from __future__ import annotations

from typing import Any

import authres
import dkim as dkimpy

from maild.dns import Resolver
from maild.mailauth import dkim
from maild.util.authresults import ArcResult, AuthResults, DmarcResult, SpfResult
from tests.fixtures.dns import DnsZone
from tests.mailauth.conftest import message, publish, signed

FORWARDER = "forwarder.example.net"


def sealed(dns_zone: DnsZone, keys: list[dict[str, Any]]) -> bytes:
    """A signed message as a mailing list forwarder passes it on, with its ARC set."""
    rsa = keys[0]
    dns_zone.set(f"arc._domainkey.{FORWARDER}", "TXT", rsa["public_record"])
    raw = signed(message(), "example.org", keys)
    raw = (f"Authentication-Results: {FORWARDER}; dkim=pass header.d=example.org\r\n"
           .encode() + raw)
    arc_set = dkimpy.arc_sign(raw, b"arc", FORWARDER.encode(), rsa["private_key"].encode(),
                              FORWARDER.encode())
    assert len(arc_set) == 3
    return b"".join(arc_set) + raw


def test_arc_pass(dns_zone: DnsZone, resolver: Resolver, org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    assert dkim.arc_verify_sync(sealed(dns_zone, org_keys), resolver) == ArcResult("pass", 1)


def test_arc_fail_when_changed_after_sealing(dns_zone: DnsZone, resolver: Resolver,
                                             org_keys: list[dict[str, Any]]) -> None:
    raw = sealed(dns_zone, org_keys).replace(b"see you.", b"see you!")
    result = dkim.arc_verify_sync(raw, resolver)
    assert (result.result, result.instances) == ("fail", 1)


def test_arc_none_and_temperror(dns_zone: DnsZone, resolver: Resolver,
                                org_keys: list[dict[str, Any]]) -> None:
    assert dkim.arc_verify_sync(message(), resolver) == ArcResult("none")
    raw = sealed(dns_zone, org_keys)
    dns_zone.timeout(f"arc._domainkey.{FORWARDER}")
    assert dkim.arc_verify_sync(raw, resolver).result == "temperror"


def test_our_header_parses_with_authres(dns_zone: DnsZone, resolver: Resolver,
                                        org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    raw = sealed(dns_zone, org_keys)
    results = AuthResults(
        spf=SpfResult("softfail", "mailfrom", "example.org", "bounce+x=y@example.org"),
        dkim=dkim.verify_sync(raw, resolver),
        dmarc=DmarcResult("pass", "example.org", policy="reject", disposition="none"),
        arc=dkim.arc_verify_sync(raw, resolver))
    value = results.header_value("mx.example.test").replace("\r\n\t", " ")
    parsed = authres.AuthenticationResultsHeader.parse(f"Authentication-Results: {value}")
    assert parsed.authserv_id == "mx.example.test"
    assert [(r.method, r.result) for r in parsed.results] == [
        ("spf", "softfail"), ("dkim", "pass"), ("dkim", "pass"), ("dmarc", "pass"),
        ("arc", "pass")]
    dkim_props = {(p.type, p.name): p.value for p in parsed.results[1].properties}
    assert dkim_props[("header", "d")] == "example.org"
    assert dkim_props[("header", "s")] == org_keys[0]["selector"]
