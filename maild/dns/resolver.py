"""The resolver service: every DNS query maild makes goes through one :class:`Resolver`.

Implementation notes (invariants a contributor must keep):

- Built on dnspython's stub resolver. ``[dns] nameservers`` (host:port each) replaces the
  system's /etc/resolv.conf when set, so tests point maild at their own server on
  127.0.0.1; an empty list means the system resolver.
- ``[dns] timeout`` bounds one whole lookup (all servers, all retries): dnspython's
  ``lifetime``. A lookup that runs out of time, or that every server answers with
  SERVFAIL/REFUSED, raises :class:`TempError` - the caller turns that into a 4xx so the
  sender retries (RFC 7208 §2.6.6 temperror, RFC 6376 §6.1.2 TEMPFAIL). It is never
  mapped to "no such record".
- NXDOMAIN, "no data" and a name that cannot be a DNS name are all an empty answer,
  not an error.
- Answers are cached by dnspython's LRU cache, which honours each answer's TTL (and the
  SOA minimum for negative answers, RFC 2308); a TTL of 0 is never served from cache.
- The ``*_sync`` methods block: call them only from worker threads (pyspf and dkimpy run
  there). The Deferred-returning methods (``mx``, ``a``, ``aaaa``, ``txt``, ``lookup``)
  run the same lookups on the reactor's thread pool and are safe on the reactor thread.
"""

from __future__ import annotations

from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.resolver
from twisted.internet import defer, threads

from maild.config import ConfigError, DnsConfig

CACHE_SIZE = 10_000  # answers; each is a few hundred bytes


class TempError(Exception):
    """A transient DNS failure (timeout, SERVFAIL): the question has no answer yet."""


class Resolver:
    def __init__(self, config: DnsConfig, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._reactor = reactor
        self.timeout = config.timeout
        try:
            self._resolver = dns.resolver.Resolver(configure=not config.nameservers)
        except dns.resolver.NoResolverConfiguration:
            raise ConfigError("dns.nameservers: empty, and the system has no resolver "
                              "configured (/etc/resolv.conf)") from None
        if config.nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(ns.host, ns.port) for ns in config.nameservers
            ]
        self._resolver.timeout = config.timeout
        self._resolver.lifetime = config.timeout
        self._resolver.cache = dns.resolver.LRUCache(CACHE_SIZE)

    # -- blocking API (worker threads only) -------------------------------------------

    def lookup_sync(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """The records of type ``rdtype`` at ``name`` (CNAMEs followed); [] if none."""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            # Not a DNS name (an empty or over-long label, a character IDNA 2008 refuses):
            # it cannot exist, so it has no records. Names come from mail (From: domains).
            return []
        try:
            answer = self._resolver.resolve(
                qname, rdtype, raise_on_no_answer=False, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
            return []
        except dns.resolver.NoNameservers as exc:  # every server said SERVFAIL/REFUSED
            raise TempError(f"{name}/{rdtype}: no server answered ({exc})") from None
        except dns.exception.Timeout:
            raise TempError(f"{name}/{rdtype}: timed out after {self.timeout}s") from None
        if answer.rrset is None:
            return []
        return list(answer.rrset)

    def txt_sync(self, name: str) -> list[bytes]:
        """Each TXT record at ``name`` with its character-strings concatenated."""
        return [b"".join(r.strings) for r in self.lookup_sync(name, "TXT")]  # type: ignore[attr-defined]

    def mx_sync(self, domain: str) -> list[tuple[int, str]]:
        """(preference, exchange) sorted by preference; a null MX (RFC 7505) is (0, ".")."""
        records = self.lookup_sync(domain, "MX")
        return sorted(
            (r.preference, _host(r.exchange)) for r in records  # type: ignore[attr-defined]
        )

    def a_sync(self, host: str) -> list[str]:
        return [r.address for r in self.lookup_sync(host, "A")]  # type: ignore[attr-defined]

    def aaaa_sync(self, host: str) -> list[str]:
        return [r.address for r in self.lookup_sync(host, "AAAA")]  # type: ignore[attr-defined]

    # -- Deferred API (reactor thread) ------------------------------------------------

    def _in_thread(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), fn, *args)

    def lookup(self, name: str, rdtype: str) -> defer.Deferred[list[dns.rdata.Rdata]]:
        return self._in_thread(self.lookup_sync, name, rdtype)

    def txt(self, name: str) -> defer.Deferred[list[bytes]]:
        return self._in_thread(self.txt_sync, name)

    def mx(self, domain: str) -> defer.Deferred[list[tuple[int, str]]]:
        return self._in_thread(self.mx_sync, domain)

    def a(self, host: str) -> defer.Deferred[list[str]]:
        return self._in_thread(self.a_sync, host)

    def aaaa(self, host: str) -> defer.Deferred[list[str]]:
        return self._in_thread(self.aaaa_sync, host)

    def run_in_thread(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        """Run blocking code that queries through this resolver (pyspf, dkimpy)."""
        return self._in_thread(fn, *args)


def _host(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True)
