"""DMARC (RFC 7489): record syntax, organisational domain, discovery through the real DNS
server, alignment, policy and pct, and the aggregate-report rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maild.dns import Resolver
from maild.mailauth import dmarc
from maild.util.authresults import DkimResult, SpfResult
from tests.fixtures.dns import DnsZone

SPF_PASS = SpfResult("pass", "mailfrom", "example.org", "bounce@example.org")
SPF_PASS_SUB = SpfResult("pass", "mailfrom", "bounces.example.org", "b@bounces.example.org")
SPF_PASS_OTHER = SpfResult("pass", "mailfrom", "esp.example.net", "b@esp.example.net")
SPF_FAIL = SpfResult("fail", "mailfrom", "example.org", "bounce@example.org")
DKIM_PASS = DkimResult("pass", "example.org", "s1", "rsa-sha256")
DKIM_PASS_SUB = DkimResult("pass", "mail.example.org", "s1", "ed25519-sha256")
DKIM_FAIL = DkimResult("fail", "example.org", "s1", "rsa-sha256")
DKIM_SHA1 = DkimResult("policy", "example.org", "s1", "rsa-sha1")


def test_parse_record() -> None:
    record = dmarc.parse_record("v=DMARC1; p=Reject; sp=none; pct=20; adkim=s; aspf=s; "
                                "rua=mailto:a@example.org, mailto:b@example.org; fo=1")
    assert record == dmarc.DmarcRecord(p="reject", sp="none", pct=20, adkim="s", aspf="s",
                                       rua=("mailto:a@example.org", "mailto:b@example.org"))
    assert dmarc.parse_record("v=DMARC1;p=none") == dmarc.DmarcRecord(p="none")
    assert dmarc.parse_record("v=DMARC1; p=reject; pct=x; adkim=q").pct == 100
    # RFC 7489 §6.6.3 step 6: no valid p= but a rua= acts as p=none
    assert dmarc.parse_record("v=DMARC1; p=bogus; rua=mailto:a@example.org").p == "none"


@pytest.mark.parametrize("text", ["v=DMARC1", "p=reject; v=DMARC1", "v=DMARC1; p=bogus",
                                  "v=dmarc1; p=reject", "v=DMARC1; p=reject; sp=maybe",
                                  "v=DMARC1; p"])
def test_invalid_records(text: str) -> None:
    with pytest.raises(dmarc.RecordError):
        dmarc.parse_record(text)


def test_organizational_domain_and_alignment() -> None:
    assert dmarc.organizational_domain("a.b.example.org") == "example.org"
    assert dmarc.organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert dmarc.organizational_domain("x.user.github.io") == "user.github.io"
    assert dmarc.aligned("mail.example.org", "Example.ORG", "r")
    assert not dmarc.aligned("mail.example.org", "example.org", "s")
    assert dmarc.aligned("example.org.", "example.org", "s")
    assert not dmarc.aligned("example.co.uk", "other.co.uk", "r")


def evaluate(from_domain: str, record: str, spf: SpfResult | None, dkim: list[DkimResult],
             sample: float = 0.0, record_domain: str = "example.org") -> dmarc.DmarcResult:
    return dmarc.evaluate(from_domain, record_domain, dmarc.parse_record(record), spf, dkim,
                          sample)


def test_alignment_paths() -> None:
    reject = "v=DMARC1; p=reject"
    assert evaluate("example.org", reject, SPF_PASS, []).result == "pass"  # SPF only
    assert evaluate("example.org", reject, None, [DKIM_PASS]).result == "pass"  # DKIM only
    assert evaluate("example.org", reject, SPF_PASS_SUB, [DKIM_PASS_SUB]).result == "pass"
    strict = "v=DMARC1; p=reject; adkim=s; aspf=s"
    result = evaluate("example.org", strict, SPF_PASS_SUB, [DKIM_PASS_SUB])
    assert (result.result, result.disposition) == ("fail", "reject")
    result = evaluate("example.org", reject, SPF_PASS_OTHER, [DKIM_FAIL, DKIM_SHA1])
    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("fail", False, False)
    assert evaluate("example.org", reject, SPF_FAIL, []).disposition == "reject"


def test_policy_and_pct() -> None:
    assert evaluate("example.org", "v=DMARC1; p=quarantine", None, []).disposition == "quarantine"
    assert evaluate("example.org", "v=DMARC1; p=none", None, []).disposition == "none"
    # RFC 7489 §6.6.4: outside the pct sample the next weaker policy applies
    half = "v=DMARC1; p=reject; pct=50"
    assert evaluate("example.org", half, None, [], sample=0.49).disposition == "reject"
    assert evaluate("example.org", half, None, [], sample=0.5).disposition == "quarantine"
    zero = "v=DMARC1; p=quarantine; pct=0"
    assert evaluate("example.org", zero, None, [], sample=0.0).disposition == "none"


def test_subdomain_policy() -> None:
    record = "v=DMARC1; p=reject; sp=quarantine"
    result = evaluate("news.example.org", record, None, [])
    assert (result.policy, result.disposition) == ("quarantine", "quarantine")
    assert evaluate("news.example.org", "v=DMARC1; p=reject", None, []).policy == "reject"
    assert evaluate("example.org", record, None, []).policy == "reject"


def test_discovery(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; sp=none", "unrelated")
    dns_zone.set("_dmarc.own.example.org", "TXT", "v=DMARC1; p=quarantine")
    assert dmarc.discover_sync(resolver, "example.org") == (
        "example.org", "v=DMARC1; p=reject; sp=none")
    # a subdomain without its own record falls back to the organizational domain
    assert dmarc.discover_sync(resolver, "a.b.example.org") == (
        "example.org", "v=DMARC1; p=reject; sp=none")
    assert dmarc.discover_sync(resolver, "own.example.org")[0] == "own.example.org"
    assert dmarc.discover_sync(resolver, "example.net") is None
    dns_zone.set("_dmarc.two.example.net", "TXT", "v=DMARC1; p=reject", "v=DMARC1; p=none")
    assert dmarc.discover_sync(resolver, "two.example.net") is None  # ambiguous: no policy


def test_check_sync(dns_zone: DnsZone, resolver: Resolver) -> None:
    dns_zone.set("_dmarc.example.org", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    result, record = dmarc.check_sync(resolver, "news.example.org", None, [], 0.0)
    assert (result.result, result.disposition, result.record_domain) == (
        "fail", "quarantine", "example.org")
    assert record is not None and record.sp == "quarantine"
    assert dmarc.check_sync(resolver, "example.net", None, [], 0.0)[0].result == "none"
    assert dmarc.check_sync(resolver, None, None, [], 0.0)[0].result == "permerror"
    dns_zone.set("_dmarc.bad.example.net", "TXT", "v=DMARC1; p=sometimes")
    assert dmarc.check_sync(resolver, "bad.example.net", None, [], 0.0)[0].result == "permerror"
    dns_zone.timeout("_dmarc.slow.example.net")
    assert dmarc.check_sync(resolver, "slow.example.net", None, [], 0.0)[0].result == "temperror"


def test_report_rows(tmp_path: Path) -> None:
    log = dmarc.ReportLog(tmp_path / "dmarc")
    record = dmarc.parse_record("v=DMARC1; p=reject; rua=mailto:agg@example.org")
    result = dmarc.evaluate("example.org", "example.org", record, SPF_FAIL, [DKIM_PASS], 0.0)
    log.append_sync("192.0.2.10", result, record, SPF_FAIL, [DKIM_PASS],
                    ["bob@example.test", "carol@Example.test"], now=1_767_225_600.0)
    log.append_sync("192.0.2.11", result, record, None, [], [], now=1_767_225_601.0)
    lines = (tmp_path / "dmarc" / "2026-01-01.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["source_ip"] == "192.0.2.10"
    assert first["header_from"] == "example.org"
    assert first["envelope_to"] == ["example.test"]
    assert first["policy_published"]["p"] == "reject"
    assert first["policy_published"]["rua"] == ["mailto:agg@example.org"]
    assert (first["disposition"], first["dkim_aligned"], first["spf_aligned"]) == (
        "none", "pass", "fail")
    assert first["dkim"] == [{"domain": "example.org", "selector": "s1", "result": "pass"}]
    assert first["spf"] == {"domain": "example.org", "scope": "mailfrom", "result": "fail"}
    assert json.loads(lines[1])["spf"] is None
