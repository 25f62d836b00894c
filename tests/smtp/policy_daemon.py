"""`maild serve` with a test policy filter as its whole filter chain (for test_filters.py).

    python -m tests.smtp.policy_daemon CONFIG
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.internet.task import deferLater

from maild import daemon
from maild.config import load
from maild.filters.chain import Filter, FilterChain, Transaction, Verdict


class PolicyFilter(Filter):
    """Exercises every hook and every kind of verdict, synchronous and deferred."""

    name = "test-policy"

    def on_connect(self, tx: Transaction) -> Verdict | None:
        tx.notes["connected_from"] = tx.client_ip
        return None

    def on_helo(self, tx: Transaction) -> Verdict | None:
        if tx.helo == "bad.example":
            return Verdict.reject(550, "5.7.1", "HELO name refused")
        tx.notes["helo_checked"] = tx.helo
        return None

    def on_mail_from(self, tx: Transaction) -> Any:
        if tx.mail_from == "grey@remote.example":
            return deferLater(default_reactor, 0.01,
                              lambda: Verdict.tempfail(451, "4.7.1", "Greylisted, try later"))
        return None

    def on_rcpt_to(self, tx: Transaction, rcpt: str) -> Verdict | None:
        if rcpt.startswith("bob+blocked@"):
            return Verdict.reject(550, "5.7.1", "Recipient refused by policy")
        return None

    def on_data(self, tx: Transaction) -> Any:
        raw = tx.raw or b""

        def decide() -> Verdict:
            if b"VIRUS" in raw:
                return Verdict.reject(554, "5.7.1", "Message refused by policy")
            verdict = Verdict(add_headers=[
                ("X-Policy", f"helo={tx.notes.get('helo_checked')} ip={tx.notes.get('connected_from')}")])
            if b"SPAM" in raw:
                verdict.folder = "Junk"
                verdict.add_headers.append(("X-Spam", "yes"))
            return verdict
        return deferLater(default_reactor, 0.01, decide)


def main() -> int:
    daemon.build_filters = lambda config, store, reactor, primary=True: FilterChain([PolicyFilter()])
    return daemon.serve(load(sys.argv[1]))


if __name__ == "__main__":
    sys.exit(main())
