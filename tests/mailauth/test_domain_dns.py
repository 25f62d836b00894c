"""`maild domain add/dns/dkim-rotate`: the printed records parse as a zone file, and once
published on the real DNS server they authenticate mail signed with the stored keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest

from maild import config as configmod
from maild.dns import Resolver
from maild.mailauth import dkim
from maild.store import Store
from tests.conftest import to_toml
from tests.fixtures.dns import DnsZone
from tests.fixtures.reactor import ReactorThread
from tests.mailauth.conftest import make_resolver, message, signed


class Cli:
    def __init__(self, tmp_path: Path, zone: DnsZone) -> None:
        self.config = tmp_path / "maild.toml"
        self.config.write_text(to_toml({
            "hostname": "mx.example.test", "data_dir": str(tmp_path / "data"),
            "store": {"shards": 1, "map_size_mb": 64, "directory_map_size_mb": 64},
            "dns": {"nameservers": [zone.nameserver], "timeout": 1.0},
            "mailauth": {"dmarc_policy": "reject"}}))

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "maild.cli", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=60)

    def keys(self, domain: str) -> list[dict]:
        cfg = configmod.load(self.config)
        store = Store(cfg.data_dir, cfg.store)
        try:
            return store.domain_dkim_keys(domain)
        finally:
            store.close()


@pytest.fixture
def cli(tmp_path: Path, dns_zone: DnsZone) -> Cli:
    return Cli(tmp_path, dns_zone)


def publish_zone(zone: DnsZone, text: str) -> dns.zone.Zone:
    """Parse the printed lines as a zone file (dnspython) and serve its records."""
    parsed = dns.zone.from_text(text, origin="example.org.", relativize=False,
                                check_origin=False)
    for name, node in parsed.nodes.items():
        for rdataset in node.rdatasets:
            host = name.to_text(omit_final_dot=True)
            if rdataset.rdtype == dns.rdatatype.TXT:
                zone.set(host, "TXT", *[[s.decode() for s in r.strings] for r in rdataset])
            elif rdataset.rdtype == dns.rdatatype.MX:
                zone.set(host, "MX", *[f"{r.preference} {r.exchange}" for r in rdataset])
    return parsed


def dkim_selectors(text: str) -> list[str]:
    return [line.split("._domainkey.")[0] for line in text.splitlines() if "._domainkey." in line]


def test_add_then_publish_what_dns_prints(cli: Cli, dns_zone: DnsZone, loop: ReactorThread) -> None:
    added = cli("domain", "add", "example.org")
    assert added.returncode == 0, added.stderr
    assert "maild domain dns example.org" in added.stdout
    printed = cli("domain", "dns", "example.org")
    assert printed.returncode == 0, printed.stderr
    parsed = publish_zone(dns_zone, printed.stdout)
    mx = parsed.get_rdataset("example.org.", "MX")
    assert [r.to_text() for r in mx] == ["10 mx.example.test."]
    resolver: Resolver = make_resolver(dns_zone, loop)
    assert resolver.txt_sync("example.org") == [b"v=spf1 mx -all"]
    assert resolver.txt_sync("_dmarc.example.org") == [b"v=DMARC1; p=reject; adkim=r; aspf=r"]
    keys = cli.keys("example.org")
    assert sorted(k["algorithm"] for k in keys) == ["ed25519-sha256", "rsa-sha256"]
    assert dkim_selectors(printed.stdout) == [k["selector"] for k in keys]
    raw = signed(message(), "example.org", keys)
    assert [r.result for r in dkim.verify_sync(raw, resolver)] == ["pass", "pass"]


def test_unknown_domain(cli: Cli) -> None:
    result = cli("domain", "dns", "nowhere.example")
    assert result.returncode == 2 and "nowhere.example" in result.stderr


def test_rotation(cli: Cli, dns_zone: DnsZone, loop: ReactorThread) -> None:
    assert cli("domain", "add", "example.org").returncode == 0
    old = [k["selector"] for k in cli.keys("example.org")]
    publish_zone(dns_zone, cli("domain", "dns", "example.org").stdout)

    rotated = cli("domain", "dkim-rotate", "example.org")
    assert rotated.returncode == 0, rotated.stderr
    assert "--confirm" in rotated.stdout
    keys = cli.keys("example.org")
    new = [k["selector"] for k in keys if k["state"] == "pending"]
    assert len(new) == 2 and not set(new) & set(old)
    assert [k["selector"] for k in dkim.signing_keys(keys)] == old  # not signing yet
    again = cli("domain", "dkim-rotate", "example.org")
    assert again.returncode == 2 and "already pending" in again.stderr

    early = cli("domain", "dkim-rotate", "example.org", "--confirm")
    assert early.returncode == 2 and "does not serve" in early.stderr
    listed = cli("domain", "dns", "example.org").stdout
    assert dkim_selectors(listed) == old + new  # old still listed, new to publish
    publish_zone(dns_zone, listed)
    confirmed = cli("domain", "dkim-rotate", "example.org", "--confirm")
    assert confirmed.returncode == 0, confirmed.stderr
    keys = cli.keys("example.org")
    assert [k["selector"] for k in dkim.signing_keys(keys)] == new
    assert dkim_selectors(cli("domain", "dns", "example.org").stdout) == old + new
    raw = signed(message(), "example.org", keys)
    resolver = make_resolver(dns_zone, loop)
    assert [r.selector for r in dkim.verify_sync(raw, resolver) if r.result == "pass"] == new

    removed = cli("domain", "dkim-rotate", "example.org", "--remove-old")
    assert removed.returncode == 0, removed.stderr
    assert dkim_selectors(cli("domain", "dns", "example.org").stdout) == new
    assert cli("domain", "dkim-rotate", "example.org", "--remove-old").returncode == 2
