"""MailAuthFilter in the filter chain: SPF at MAIL FROM, DKIM/DMARC/ARC at end of DATA,
the Authentication-Results header, DMARC enforcement, 451 on DNS timeouts, and DKIM
signing of submissions - all against the real DNS server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from maild import config as configmod
from maild.dns import Resolver
from maild.filters.chain import Action, FilterChain, Transaction, Verdict
from maild.mailauth import dkim
from maild.mailauth.filter import MailAuthFilter
from maild.util.authresults import AuthResults
from tests.fixtures.dns import DnsZone
from tests.fixtures.reactor import ReactorThread
from tests.mailauth.conftest import message, publish, signed

ALLOWED_IP = "192.0.2.10"
OTHER_IP = "198.51.100.9"


def make_config(tmp_path: Path, **mailauth: Any) -> configmod.Config:
    return configmod.from_dict({"hostname": "mx.example.test", "data_dir": str(tmp_path),
                                "mailauth": mailauth}, tmp_path / "maild.toml")


@pytest.fixture
def org(dns_zone: DnsZone, org_keys: list[dict[str, Any]]) -> DnsZone:
    """example.org: SPF allows ALLOWED_IP, both DKIM keys published, p=reject."""
    dns_zone.set("example.org", "TXT", f"v=spf1 ip4:{ALLOWED_IP} -all")
    dns_zone.set("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.org")
    publish(dns_zone, "example.org", org_keys)
    return dns_zone


class Session:
    """Drives the chain through one SMTP transaction the way the SMTP server does."""

    def __init__(self, loop: ReactorThread, flt: MailAuthFilter, client_ip: str = ALLOWED_IP,
                 submission: bool = False) -> None:
        self.loop = loop
        self.chain = FilterChain([flt])
        self.tx = Transaction(client_ip=client_ip, client_port=40000, submission=submission,
                              helo="client.example.net")

    def mail_from(self, sender: str) -> Verdict:
        self.tx.mail_from = sender
        return self.loop.call(self.chain.run, "mail_from", self.tx)

    def data(self, raw: bytes, rcpt: str = "bob@example.test") -> Verdict:
        self.tx.rcpt_to = [rcpt]
        self.tx.raw = raw
        return self.loop.call(self.chain.run, "data", self.tx)

    @property
    def results(self) -> AuthResults:
        return self.tx.notes["auth_results"]


def inbound(loop: ReactorThread, resolver: Resolver, tmp_path: Path, client_ip: str = ALLOWED_IP,
            sample: float = 0.0, **mailauth: Any) -> Session:
    flt = MailAuthFilter(make_config(tmp_path, **mailauth), resolver, sample=lambda: sample)
    return Session(loop, flt, client_ip)


def header(verdict: Verdict) -> str:
    (name, value), = verdict.add_headers
    assert name == "Authentication-Results"
    return value


def test_dmarc_pass_by_spf_alone(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                 tmp_path: Path) -> None:
    s = inbound(loop, resolver, tmp_path)
    assert s.mail_from("bounce@example.org").action is Action.ACCEPT
    assert s.results.spf is not None and s.results.spf.result == "pass"
    verdict = s.data(message())
    assert verdict.action is Action.ACCEPT and verdict.folder is None
    value = header(verdict)
    assert value.startswith("mx.example.test;")
    assert "spf=pass smtp.mailfrom=bounce@example.org" in value
    assert "dkim=none" in value and "dmarc=pass (p=reject dis=none)" in value
    assert s.results.dmarc is not None and s.results.dmarc.spf_aligned


def test_dmarc_pass_by_dkim_alone(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                  tmp_path: Path, org_keys: list[dict[str, Any]]) -> None:
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP)  # forwarded: SPF fails
    s.mail_from("bounce@example.org")
    verdict = s.data(signed(message(), "example.org", org_keys))
    assert verdict.action is Action.ACCEPT
    assert s.results.spf is not None and s.results.spf.result == "fail"
    assert [d.result for d in s.results.dkim] == ["pass", "pass"]
    assert s.results.dmarc is not None
    assert (s.results.dmarc.result, s.results.dmarc.dkim_aligned) == ("pass", True)
    assert header(verdict).count("dkim=pass") == 2


def test_dmarc_reject(org: DnsZone, resolver: Resolver, loop: ReactorThread, tmp_path: Path) -> None:
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP)
    s.mail_from("bounce@example.org")
    verdict = s.data(message())
    assert verdict.action is Action.REJECT
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    rows = [json.loads(line) for line in
            next((tmp_path / "dmarc").glob("*.jsonl")).read_text().splitlines()]
    assert [(r["header_from"], r["disposition"], r["source_ip"]) for r in rows] == [
        ("example.org", "reject", OTHER_IP)]


def test_dmarc_quarantine_goes_to_junk(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                       tmp_path: Path) -> None:
    org.set("_dmarc.example.org", "TXT", "v=DMARC1; p=quarantine")
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP)
    s.mail_from("bounce@example.org")
    verdict = s.data(message())
    assert (verdict.action, verdict.folder) == (Action.ACCEPT, "Junk")
    assert "dmarc=fail (p=quarantine dis=quarantine)" in header(verdict)


def test_dmarc_none_is_only_recorded(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                     tmp_path: Path) -> None:
    org.set("_dmarc.example.org", "TXT", "v=DMARC1; p=none")
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP)
    s.mail_from("bounce@example.org")
    verdict = s.data(message())
    assert (verdict.action, verdict.folder) == (Action.ACCEPT, None)
    assert "dmarc=fail (p=none dis=none)" in header(verdict)


def test_subdomain_policy(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                          tmp_path: Path) -> None:
    org.set("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP)
    s.mail_from("bounce@news.example.org")
    verdict = s.data(message(from_addr="news@news.example.org"))
    assert (verdict.action, verdict.folder) == (Action.ACCEPT, "Junk")
    assert s.results.dmarc is not None and s.results.dmarc.record_domain == "example.org"


def test_pct_sampling_and_enforcement_switch(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                             tmp_path: Path) -> None:
    org.set("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; pct=10")
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP, sample=0.5)
    s.mail_from("bounce@example.org")
    assert s.data(message()).folder == "Junk"  # outside the 10 % sample: quarantine
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP, enforce_dmarc=False)
    s.mail_from("bounce@example.org")
    verdict = s.data(message())
    assert (verdict.action, verdict.folder) == (Action.ACCEPT, None)
    assert "dis=reject" in header(verdict)


def test_forged_results_are_removed(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                    tmp_path: Path) -> None:
    s = inbound(loop, resolver, tmp_path)
    s.mail_from("bounce@example.org")
    raw = message(extra="Authentication-Results: mx.example.test; dmarc=pass\r\n"
                        "Authentication-Results: upstream.example.net; spf=pass\r\n")
    verdict = s.data(raw)
    assert verdict.action is Action.ACCEPT
    assert s.tx.raw is not None
    assert b"mx.example.test; dmarc=pass" not in s.tx.raw
    assert b"Authentication-Results: upstream.example.net; spf=pass" in s.tx.raw
    assert len(verdict.add_headers) == 1


def test_spf_timeout_tempfails_at_mail_from(dns_zone: DnsZone, resolver: Resolver, loop: ReactorThread,
                                            tmp_path: Path) -> None:
    dns_zone.timeout("example.org")
    s = inbound(loop, resolver, tmp_path)
    verdict = s.mail_from("bounce@example.org")
    assert verdict.action is Action.TEMPFAIL and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.24")


def test_dkim_or_dmarc_timeout_tempfails_at_data(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                                 tmp_path: Path,
                                                 org_keys: list[dict[str, Any]]) -> None:
    org.timeout(f"{org_keys[0]['selector']}._domainkey.example.org")
    s = inbound(loop, resolver, tmp_path)
    s.mail_from("bounce@example.org")
    verdict = s.data(signed(message(), "example.org", org_keys))
    assert verdict.action is Action.TEMPFAIL and verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (451, "4.7.0")
    org.timeout("_dmarc.example.org")
    s = inbound(loop, resolver, tmp_path)
    s.mail_from("bounce@example.org")
    assert s.data(message()).action is Action.TEMPFAIL


def test_null_sender_uses_helo(dns_zone: DnsZone, resolver: Resolver, loop: ReactorThread,
                               tmp_path: Path) -> None:
    dns_zone.set("client.example.net", "TXT", f"v=spf1 ip4:{ALLOWED_IP} -all")
    s = inbound(loop, resolver, tmp_path)
    s.mail_from("")
    verdict = s.data(message(from_addr="mailer-daemon@client.example.net"))
    assert "spf=pass smtp.helo=client.example.net" in header(verdict)


def test_verify_disabled(org: DnsZone, resolver: Resolver, loop: ReactorThread, tmp_path: Path) -> None:
    s = inbound(loop, resolver, tmp_path, client_ip=OTHER_IP, verify=False)
    assert s.mail_from("bounce@example.org").action is Action.ACCEPT
    verdict = s.data(message())
    assert (verdict.action, verdict.add_headers) == (Action.ACCEPT, [])
    assert "auth_results" not in s.tx.notes


def test_submission_is_signed_with_both_keys(org: DnsZone, resolver: Resolver, loop: ReactorThread,
                                             tmp_path: Path,
                                             org_keys: list[dict[str, Any]]) -> None:
    asked: list[str] = []

    def keys(domain: str) -> list[dict[str, Any]]:
        asked.append(domain)
        return org_keys

    flt = MailAuthFilter(make_config(tmp_path), resolver, keys)
    s = Session(loop, flt, client_ip=OTHER_IP, submission=True)
    s.tx.authenticated_user = "alice@example.org"
    assert s.mail_from("alice@example.org").action is Action.ACCEPT  # no SPF on submission
    raw = message()
    verdict = s.data(raw)
    assert asked == ["example.org"]
    assert [name for name, _ in verdict.add_headers] == ["DKIM-Signature", "DKIM-Signature"]
    out = b"".join(f"{n}: {v}\r\n".encode() for n, v in verdict.add_headers) + raw
    assert [(r.result, r.algorithm) for r in dkim.verify_sync(out, resolver)] == [
        ("pass", "rsa-sha256"), ("pass", "ed25519-sha256")]


def test_submission_without_keys_is_not_signed(resolver: Resolver, loop: ReactorThread,
                                               tmp_path: Path) -> None:
    flt = MailAuthFilter(make_config(tmp_path), resolver, lambda domain: [])
    s = Session(loop, flt, submission=True)
    assert s.data(message()).add_headers == []
    flt = MailAuthFilter(make_config(tmp_path, sign=False), resolver,
                         lambda domain: pytest.fail("keys asked for with sign = false"))
    assert Session(loop, flt, submission=True).data(message()).add_headers == []
