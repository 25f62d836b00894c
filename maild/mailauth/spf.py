"""SPF (RFC 7208) with pyspf, every query through maild's resolver service.

pyspf is blocking and looks names up through its module-level ``DNSLookup``. We replace
that once with a function that asks the resolver bound to the calling thread, so each
check (run in a worker thread) uses the configured nameservers, timeouts and cache, and a
timeout becomes pyspf's TempError -> ``temperror`` (RFC 7208 §2.6.6), never "no record".
pyspf keeps the RFC's limits: 10 DNS-querying terms (§4.6.4), 2 void lookups (§4.6.4),
10 MX/PTR names.
"""

from __future__ import annotations

import ipaddress
import threading
from typing import Any

import spf

from maild.dns import Resolver, TempError
from maild.util.authresults import SpfResult

TOTAL_TIME = 20.0  # RFC 7208 §4.6.4: at least 20 seconds for the whole evaluation

_bound = threading.local()


def _lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup contract: [((name, qtype), value), ...]."""
    resolver: Resolver = _bound.resolver
    try:
        records = resolver.lookup_sync(name, qtype)
    except TempError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    result: list[Any] = []
    for rdata in records:
        if qtype in ("A", "AAAA"):
            value: Any = rdata.address  # type: ignore[attr-defined]
        elif qtype == "MX":
            value = (rdata.preference, rdata.exchange.to_text(True))  # type: ignore[attr-defined]
        elif qtype == "PTR":
            value = rdata.target.to_text(True)  # type: ignore[attr-defined]
        elif qtype in ("TXT", "SPF"):
            value = rdata.strings  # type: ignore[attr-defined]
        else:
            continue
        result.append(((name, qtype), value))
    return result


spf.DNSLookup = _lookup


def check_sync(resolver: Resolver, client_ip: str, mail_from: str, helo: str | None,
               receiver: str) -> SpfResult:
    """Evaluate SPF for MAIL FROM, or for the HELO name when MAIL FROM is null
    (RFC 7208 §2.4). Blocking: call from a worker thread."""
    if mail_from:
        scope, identity, sender = "mailfrom", mail_from, mail_from
        domain = mail_from.rpartition("@")[2] or (helo or "")
    else:
        if not helo or _is_address_literal(helo):
            return SpfResult("none", "helo", "", helo or "", "no HELO domain to check")
        scope, identity, sender = "helo", helo, f"postmaster@{helo}"  # RFC 7208 §2.4
        domain = helo
    _bound.resolver = resolver
    try:
        query = spf.query(i=client_ip, s=sender, h=helo or domain, receiver=receiver,
                          querytime=TOTAL_TIME)
        result, _code, explanation = query.check()
    finally:
        del _bound.resolver
    return SpfResult(result, scope, domain.lower(), identity, explanation)


def _is_address_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return False
    return True
