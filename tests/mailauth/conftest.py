"""Mail authentication tests: a private reactor, a resolver pointed at the test DNS
server (``dns_zone`` from tests/fixtures/dns.py), DKIM keys and message helpers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from maild.config import Address, DnsConfig
from maild.dns import Resolver
from maild.mailauth import dkim
from tests.fixtures.dns import DnsZone
from tests.fixtures.reactor import ReactorThread

DNS_TIMEOUT = 0.5  # seconds: the temperror tests wait this long, once each


@pytest.fixture(scope="session")
def loop() -> Iterator[ReactorThread]:
    running = ReactorThread(name="mailauth-reactor")
    yield running
    running.stop()


def make_resolver(zone: DnsZone, loop: ReactorThread) -> Resolver:
    return Resolver(DnsConfig([Address(zone.host, zone.port)], DNS_TIMEOUT), loop.reactor)


@pytest.fixture
def resolver(dns_zone: DnsZone, loop: ReactorThread) -> Resolver:
    return make_resolver(dns_zone, loop)


@pytest.fixture(scope="session")
def org_keys() -> list[dict[str, Any]]:
    """rsa-2048 + ed25519 keys (generated once: RSA key generation is slow)."""
    return dkim.generate_keys("example.org", now=1_767_225_600.0)  # 2026-01-01


def publish(zone: DnsZone, domain: str, keys: list[dict[str, Any]]) -> None:
    for key in keys:
        zone.set(f"{key['selector']}._domainkey.{domain}", "TXT", key["public_record"])


def message(from_addr: str = "Alice <alice@example.org>", to: str = "bob@example.test",
            subject: str = "Hello", body: str = "Hi Bob,\r\n\r\nsee you.\r\n",
            extra: str = "") -> bytes:
    return (f"From: {from_addr}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Thu, 01 Jan 2026 10:00:00 +0000\r\n"
            "Message-ID: <m1@example.org>\r\n" + extra + "\r\n" + body).encode()


def signed(raw: bytes, domain: str, keys: list[dict[str, Any]]) -> bytes:
    """``raw`` with DKIM-Signature fields prepended as a signing MTA would."""
    headers = dkim.sign_sync(raw, domain, keys)
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in headers) + raw
