"""The built-in scorer: SPF/DKIM/DMARC results and DNS blocklists through the resolver
service and a real DNS server."""

from __future__ import annotations

import pytest

from maild.config import Address, DnsConfig
from maild.dns.resolver import Resolver
from maild.filters.fallback import FallbackSpamFilter, dnsbl_query_name, is_listing
from maild.filters.spam import SpamAction, SpamPolicy
from maild.util.transaction import Action
from tests.filters.conftest import auth_results, make_tx
from tests.filters.messages import message

ZONES = ["bl.example.net", "other.example.org"]


@pytest.fixture
def scorer(reactor_thread, dns_zone):
    resolver = Resolver(DnsConfig([Address(dns_zone.host, dns_zone.port)], timeout=1.0),
                        reactor_thread.reactor)
    return FallbackSpamFilter(SpamPolicy(), resolver, ZONES, dnsbl_score=4.0,
                              junk_score=5.0, reject_score=10.0)


def score(reactor_thread, scorer, **tx_args):
    tx = make_tx(message(), **tx_args)
    verdict = reactor_thread.call(scorer.on_data, tx)
    return verdict, tx.notes["spam"]


def test_authenticated_clean_mail_goes_to_inbox(reactor_thread, scorer):
    verdict, spam = score(reactor_thread, scorer,
                          auth_results=auth_results("pass", ("pass",), "pass"))
    assert verdict.folder is None
    assert spam.score == -2.5
    assert spam.symbols == ("DKIM_PASS", "DMARC_PASS", "SPF_PASS")
    assert dict(verdict.add_headers)["X-Spam-Status"].startswith("No, score=-2.50 required=5.00 ")


def test_dmarc_failure_goes_to_junk(reactor_thread, scorer):
    verdict, spam = score(reactor_thread, scorer,
                          auth_results=auth_results("softfail", (), "fail"))
    assert spam.action is SpamAction.JUNK
    assert verdict.folder == "Junk"
    assert dict(verdict.add_headers)["X-Spam-Flag"] == "YES"
    # required= is the Junk threshold that made it Yes (5.0), not the reject one (10.0)
    status = dict(verdict.add_headers)["X-Spam-Status"]
    assert status.startswith(f"Yes, score={spam.score:.2f} required=5.00 ")


def test_one_dkim_pass_among_failures_counts_as_pass(reactor_thread, scorer):
    _verdict, spam = score(reactor_thread, scorer,
                           auth_results=auth_results(dkim=("fail", "pass")))
    assert spam.symbols == ("DKIM_PASS",)


def test_dnsbl_listings_add_up_to_a_reject(reactor_thread, scorer, dns_zone):
    dns_zone.set("10.2.0.192.bl.example.net", "A", "127.0.0.2")
    dns_zone.set("10.2.0.192.other.example.org", "A", "127.0.0.4")
    verdict, spam = score(reactor_thread, scorer, client_ip="192.0.2.10",
                          auth_results=auth_results("fail"))
    assert spam.score == 11.0
    assert "DNSBL(bl.example.net)" in spam.symbols
    assert verdict.action is Action.REJECT
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")


def test_dnsbl_error_codes_and_timeouts_are_not_listings(reactor_thread, scorer, dns_zone):
    dns_zone.set("10.2.0.192.bl.example.net", "A", "127.255.255.254")  # "query refused"
    dns_zone.timeout("10.2.0.192.other.example.org")
    verdict, spam = score(reactor_thread, scorer, client_ip="192.0.2.10")
    assert spam.score == 0.0
    assert verdict.folder is None


def test_authenticated_submission_skips_the_blocklists(reactor_thread, scorer, dns_zone):
    dns_zone.set("10.2.0.192.bl.example.net", "A", "127.0.0.2")
    _verdict, spam = score(reactor_thread, scorer, client_ip="192.0.2.10",
                           authenticated_user="alice@example.test")
    assert spam.score == 0.0


@pytest.mark.parametrize(("ip", "name"), [
    ("192.0.2.99", "99.2.0.192.bl.test"),
    ("::ffff:192.0.2.99", "99.2.0.192.bl.test"),
    ("2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"),
    ("not-an-ip", None),
])
def test_dnsbl_query_name(ip, name):
    assert dnsbl_query_name(ip, "bl.test.") == name


def test_is_listing():
    assert is_listing(["127.0.0.2"])
    assert not is_listing(["127.255.255.252", "192.0.2.1"])
