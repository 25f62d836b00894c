"""Mail authentication in the SMTP filter chain.

Implementation notes (invariants a contributor must keep):

- Inbound ([smtp], not submission): SPF at MAIL FROM (the HELO name when MAIL FROM is
  null, RFC 7208 §2.4); at end of DATA every DKIM signature, the ARC chain and DMARC.
  Results go to ``tx.notes["auth_results"]`` (an :class:`AuthResults`) before any later
  filter runs, and into one Authentication-Results field (RFC 8601) named with our
  authserv-id, the configured hostname. Fields already claiming that authserv-id are
  removed from ``tx.raw`` first (RFC 8601 §5): the SMTP server stores ``tx.raw`` as the
  filters leave it.
- A DNS timeout anywhere is a temperror and answers 451 (4.7.24 for SPF, RFC 7372
  §3.2; 4.7.0 otherwise) so the sender retries; it never passes or fails silently.
- DMARC (RFC 7489 §6.6.4, §10.3): p=reject answers 550 5.7.1 at end of DATA,
  p=quarantine delivers to Junk, both after pct sampling and only with
  ``[mailauth] enforce_dmarc``. Every evaluation against a published policy is appended
  to the aggregate-report log.
- Submission: the message is DKIM-signed with every active key of its From domain
  (rsa-sha256 and ed25519-sha256) on a worker thread - RSA signing costs milliseconds.
- pyspf and dkimpy block: they run on the reactor's thread pool, querying through the
  resolver service; nothing here blocks the reactor thread.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from maild.config import Config
from maild.dns import Resolver
from maild.mailauth import dkim, dmarc, spf
from maild.store.types import StoreError
from maild.util.authresults import TEMPERROR, AuthResults
from maild.util.message import Header, from_domain
from maild.util.transaction import Filter, Transaction, Verdict

if TYPE_CHECKING:
    from maild.store import Store

log = logging.getLogger("maild.mailauth")

NOTE = "auth_results"
KeySource = Callable[[str], list[dict[str, Any]]]


class MailAuthFilter(Filter):
    name = "mailauth"

    def __init__(self, config: Config, resolver: Resolver, dkim_keys: KeySource | None = None,
                 sample: Callable[[], float] = random.random) -> None:
        """``dkim_keys(domain)`` returns the domain's stored keys (``store.domain_dkim_keys``);
        ``sample`` draws the DMARC pct sample in [0, 1)."""
        self.config = config
        self.settings = config.mailauth
        self.resolver = resolver
        self.dkim_keys = dkim_keys
        self.sample = sample
        self.reports = (dmarc.ReportLog(config.data_dir / "dmarc")
                        if self.settings.dmarc_reports else None)

    # -- MAIL FROM: SPF ------------------------------------------------------------------

    def on_mail_from(self, tx: Transaction) -> defer.Deferred[Verdict | None] | None:
        if tx.submission or not self.settings.verify:
            return None
        d = self.resolver.run_in_thread(spf.check_sync, self.resolver, tx.client_ip,
                                        tx.mail_from or "", tx.helo, self.config.hostname)

        def done(result: spf.SpfResult) -> Verdict | None:
            tx.notes[NOTE] = AuthResults(spf=result)
            if result.result == TEMPERROR:
                log.info("SPF temperror for %s from %s: %s", result.identity, tx.client_ip,
                         result.explanation)
                return Verdict.tempfail(451, "4.7.24", "Temporary SPF failure, try again later")
            return None

        return d.addCallback(done)

    # -- end of DATA ---------------------------------------------------------------------

    def on_data(self, tx: Transaction) -> defer.Deferred[Verdict | None] | None:
        if tx.raw is None:
            return None
        if tx.submission:
            return self._sign(tx) if self.settings.sign else None
        return self._verify(tx) if self.settings.verify else None

    def _verify(self, tx: Transaction) -> defer.Deferred[Verdict | None]:
        raw: bytes = tx.raw  # type: ignore[assignment]
        parsed: Header = tx.header  # type: ignore[assignment]
        earlier = tx.notes.get(NOTE)
        spf_result = earlier.spf if isinstance(earlier, AuthResults) else None

        def check() -> AuthResults:
            results = AuthResults(spf=spf_result)
            if results.spf is None:  # no MAIL FROM hook ran for this transaction
                results.spf = spf.check_sync(self.resolver, tx.client_ip, tx.mail_from or "",
                                             tx.helo, self.config.hostname)
            results.dkim = dkim.verify_sync(raw, self.resolver)
            results.arc = dkim.arc_verify_sync(raw, self.resolver)
            results.dmarc, record = dmarc.check_sync(
                self.resolver, from_domain(parsed), results.spf, results.dkim,
                self.sample())
            if self.reports is not None and record is not None:
                self.reports.append_sync(tx.client_ip, results.dmarc, record, results.spf,
                                         results.dkim, tx.rcpt_to)
            return results

        def done(results: AuthResults) -> Verdict:
            tx.notes[NOTE] = results
            if results.temperror:
                log.info("authentication temperror from %s: %s", tx.client_ip,
                         results.header_value(self.config.hostname).replace("\r\n\t", " "))
                if results.spf is not None and results.spf.result == TEMPERROR:
                    return Verdict.tempfail(451, "4.7.24",
                                            "Temporary SPF failure, try again later")
                return Verdict.tempfail(451, "4.7.0",
                                        "Temporary DNS failure checking the message, "
                                        "try again later")
            tx.raw = remove_auth_results(parsed, self.config.hostname)
            header = ("Authentication-Results", results.header_value(self.config.hostname))
            verdict = Verdict(add_headers=[header])
            assert results.dmarc is not None
            if self.settings.enforce_dmarc:
                if results.dmarc.disposition == "reject":  # RFC 7489 §10.3
                    return Verdict.reject(550, "5.7.1", "Rejected by the DMARC policy of "
                                          f"{results.dmarc.from_domain}")
                if results.dmarc.disposition == "quarantine":
                    verdict.folder = "Junk"
            return verdict

        return self.resolver.run_in_thread(check).addCallback(done)

    def _sign(self, tx: Transaction) -> defer.Deferred[Verdict | None] | None:
        raw: bytes = tx.raw  # type: ignore[assignment]
        domain = from_domain(tx.header)  # type: ignore[arg-type]
        if domain is None or self.dkim_keys is None:
            return None
        try:
            keys = dkim.signing_keys(self.dkim_keys(domain))
        except StoreError:  # not one of our domains: nothing to sign with
            return None
        if not keys:
            return None

        def done(headers: list[tuple[str, str]]) -> Verdict:
            return Verdict(add_headers=headers)

        return self.resolver.run_in_thread(dkim.sign_sync, raw, domain, keys).addCallback(done)


def _authserv_id(value: str) -> str:
    """The authserv-id that starts an Authentication-Results value (RFC 8601 §2.2)."""
    head = re.sub(r"\([^)]*\)", " ", value.split(";", 1)[0])  # drop CFWS comments
    words = head.split()
    return words[0].lower() if words else ""


def remove_auth_results(header: Header, authserv_id: str) -> bytes:
    """The message without the Authentication-Results fields that claim our authserv-id:
    only we may write those (RFC 8601 §5)."""
    ours = authserv_id.lower()
    return header.without([f for f in header.fields if f.lname == "authentication-results"
                           and _authserv_id(f.value) == ours])


def build_filters(config: Config, store: Store, reactor: Any) -> list[Filter]:
    """The daemon's hook: the mail authentication filter, first in the chain."""
    resolver = Resolver(config.dns, reactor)
    return [MailAuthFilter(config, resolver, store.domain_dkim_keys)]
