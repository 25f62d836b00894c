"""Our DKIM signatures checked by a second independent verifier: rspamd's dkim module,
with its DNS pointed at the test server (tests/fixtures/rspamd.py)."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.fixtures.dns import DnsZone
from tests.fixtures.rspamd import RspamdProcess
from tests.mailauth.conftest import message, publish, signed


def check(rspamd: RspamdProcess, raw: bytes) -> dict[str, Any]:
    request = urllib.request.Request(rspamd.url + "/checkv2", data=raw, method="POST",
                                     headers={"IP": "192.0.2.10", "From": "bounce@example.org",
                                              "Helo": "client.example.net"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["symbols"]


def test_rspamd_accepts_both_signatures(rspamd: RspamdProcess, dns_zone: DnsZone,
                                        org_keys: list[dict[str, Any]]) -> None:
    publish(dns_zone, "example.org", org_keys)
    for key in org_keys:  # each algorithm on its own
        symbols = check(rspamd, signed(message(), "example.org", [key]))
        assert "R_DKIM_ALLOW" in symbols, (key["algorithm"], sorted(symbols))
        assert symbols["R_DKIM_ALLOW"]["options"] == [f"example.org:s={key['selector']}"]
    tampered = signed(message(), "example.org", org_keys).replace(b"see you.", b"pay now.")
    symbols = check(rspamd, tampered)
    assert "R_DKIM_REJECT" in symbols and "R_DKIM_ALLOW" not in symbols, sorted(symbols)
