"""The built-in spam scorer, for when rspamd is not configured or not answering.

The score adds up the mail-authentication results (``notes["auth_results"]``) and the DNS
blocklists that list the client's address, then goes through the same
:class:`maild.filters.spam.SpamPolicy` as rspamd's answer: at ``fallback_junk_score``
the message goes to Junk, at ``fallback_reject_score`` it is refused.

DNSBL queries (RFC 5782 §2.1: the address's octets, or an IPv6 address's nibbles, in
reverse order under the zone; any A record in 127.0.0.0/8 means "listed") go through the
resolver service, all zones concurrently, each bounded by ``[dns] timeout``. A zone that
does not answer counts as not listing the client. 127.255.255.0/24 answers are a
blocklist's error codes (e.g. "query refused"), not listings.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Protocol

from twisted.internet import defer

from maild.filters.spam import SpamAction, SpamPolicy, SpamScore, auth_methods
from maild.util.transaction import Filter, Transaction

log = logging.getLogger(__name__)

# (method, result) -> score; documented in docs/filters.md.
AUTH_SCORES: dict[tuple[str, str], float] = {
    ("spf", "pass"): -0.5,
    ("spf", "fail"): 3.0,
    ("spf", "softfail"): 1.5,
    ("spf", "permerror"): 1.0,
    ("dkim", "pass"): -1.0,
    ("dkim", "fail"): 2.0,
    ("dkim", "permerror"): 1.0,
    ("dmarc", "pass"): -1.0,
    ("dmarc", "fail"): 5.0,
}

_DNSBL_ERRORS = ipaddress.ip_network("127.255.255.0/24")
_DNSBL_LISTED = ipaddress.ip_network("127.0.0.0/8")


class AddressResolver(Protocol):
    """The slice of maild.dns.resolver.Resolver used here."""

    def a(self, host: str) -> defer.Deferred[list[str]]: ...


def dnsbl_query_name(client_ip: str, zone: str) -> str | None:
    """RFC 5782 §2.1 (IPv4) and §2.4 (IPv6) query name; None for a non-IP."""
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        labels = reversed(str(address).split("."))
    else:
        labels = reversed(address.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.strip(".")


def is_listing(addresses: list[str]) -> bool:
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if address in _DNSBL_LISTED and address not in _DNSBL_ERRORS:
            return True
    return False


class FallbackSpamFilter(Filter):
    name = "spam-fallback"

    def __init__(self, policy: SpamPolicy, resolver: AddressResolver | None,
                 zones: list[str], dnsbl_score: float, junk_score: float,
                 reject_score: float) -> None:
        self.policy = policy
        self.resolver = resolver
        self.zones = list(zones)
        self.dnsbl_score = dnsbl_score
        self.junk_score = junk_score
        self.reject_score = reject_score

    def _listed(self, zone: str, client_ip: str) -> defer.Deferred[bool]:
        name = dnsbl_query_name(client_ip, zone)
        if name is None or self.resolver is None:
            return defer.succeed(False)

        def failed(failure: Any) -> bool:
            log.warning("dnsbl %s: %s", zone, failure.getErrorMessage())
            return False

        return self.resolver.a(name).addCallback(is_listing).addErrback(failed)

    @defer.inlineCallbacks
    def on_data(self, tx: Transaction):  # type: ignore[no-untyped-def]
        symbols: list[str] = []
        score = 0.0
        for method, result in sorted(auth_methods(tx.notes).items()):
            points = AUTH_SCORES.get((method, result))
            if points is not None:
                score += points
                symbols.append(f"{method.upper()}_{result.upper()}")
        if tx.authenticated_user is None and self.zones:
            listed = yield defer.gatherResults([self._listed(z, tx.client_ip) for z in self.zones])
            for zone, hit in zip(self.zones, listed, strict=True):
                if hit:
                    score += self.dnsbl_score
                    symbols.append(f"DNSBL({zone})")
        if score >= self.reject_score:
            action = SpamAction.REJECT
        elif score >= self.junk_score:
            action = SpamAction.JUNK
        else:
            action = SpamAction.NONE
        verdict = yield self.policy.verdict(
            tx, SpamScore(action, score, self.reject_score, "fallback", tuple(symbols),
                          junk=self.junk_score))
        return verdict
