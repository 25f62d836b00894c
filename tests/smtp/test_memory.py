"""Memory for one large message (issue 15 item 3): receiving, checking, signing and
storing a 25 MB message holds a bounded number of copies of it (docs/smtp.md, "Memory"):
the daemon's peak RSS grows by less than 3x the message's size, over the MX port (DKIM
verified, DMARC) and over submission (DKIM-signed, a copy in Sent), with DATA and BDAT.

Before: one 25 MB message took the process from 60 to 300 MB. The attachment filter runs
too (its default blocklist): it reads the one MIME walk of the message (maild.util.mime)."""

from __future__ import annotations

import smtplib
import ssl
from typing import Any

import dkim as dkimpy
import pytest

from maild.mailauth import dkim
from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.fixtures.memory import big_message, reset_peak, rss_mb
from tests.smtp.conftest import messages

SIZE = 24 * 1024 * 1024
MAILD_OVERRIDES = {"smtp": {"messages_per_minute_per_ip": 0},
                   "submission": {"messages_per_minute_per_ip": 0}}


def _send(server: MaildServer, port: str, raw: bytes, bdat: bool = False) -> None:
    with smtplib.SMTP(server.host, server.ports[port], timeout=120) as client:
        client.ehlo("client.example")
        if port == "submission":
            context = ssl.create_default_context(cafile=str(server.cafile))
            client.starttls(context=context)
            client.ehlo("client.example")
            client.login("alice@example.test", "alice-secret")
        sender = "alice@example.test" if port == "submission" else "someone@remote.example"
        if not bdat:
            client.sendmail(sender, ["bob@example.test"], raw)
            return
        client.mail(sender)
        client.rcpt("bob@example.test")
        half = len(raw) // 2
        for chunk, last in ((raw[:half], False), (raw[half:], True)):
            client.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
            code, text = client.getreply()
            assert code == 250, (code, text)


@pytest.fixture(scope="module")
def keys(server: MaildServer) -> dict[str, list[dict[str, Any]]]:
    """DKIM keys: example.test's in the daemon (submission signs with them), and a remote
    domain's that signs what comes to the MX."""
    ours = dkim.generate_keys("example.test")
    server.set_dkim_keys("example.test", ours)
    return {"example.test": ours, "remote.example": dkim.generate_keys("remote.example")}


def _publish(zone: DnsZone, keys: dict[str, list[dict[str, Any]]]) -> None:
    for domain, pairs in keys.items():
        for key in pairs:
            zone.set(f"{key['selector']}._domainkey.{domain}", "TXT", key["public_record"])


@pytest.mark.parametrize(("port", "bdat"), [("smtp", False), ("submission", False), ("smtp", True)])
def test_one_large_message_costs_under_three_copies(server: MaildServer, keys: dict[str, Any],
                                                    dns_zone: DnsZone, port: str, bdat: bool) -> None:
    _publish(dns_zone, keys)
    subject = f"big-{port}-{bdat}"
    sender = "alice@example.test" if port == "submission" else "someone@remote.example"
    _send(server, port, big_message(2000, sender, f"warm-{subject}"), bdat)  # code paths loaded
    raw = big_message(SIZE, sender, subject)
    if port == "smtp":  # signed by the sending domain (dkimpy itself), verified by the MX
        (rsa,) = [k for k in keys["remote.example"] if k["algorithm"] == "rsa-sha256"]
        raw = dkimpy.sign(raw, rsa["selector"].encode(), b"remote.example",
                          rsa["private_key"].encode(), canonicalize=(b"relaxed", b"relaxed")) + raw
    pid = server.process.pid  # type: ignore[union-attr]
    before, _ = rss_mb(pid)
    reset_peak(pid)
    _send(server, port, raw, bdat)
    _, peak = rss_mb(pid)
    (stored,) = [m for m in messages(server, "bob@example.test")
                 if f"Subject: {subject}\r\n".encode() in m[:4096]]
    assert stored.endswith(raw)  # trace and result headers prepended, the message intact
    if port == "submission":
        assert stored[:len(stored) - len(raw)].count(b"DKIM-Signature:") == 2
    else:
        assert b"dkim=pass header.d=remote.example" in stored[:len(stored) - len(raw)]
    growth = peak - before
    print(f"maild peak RSS growth: {growth:.0f} MiB")  # shown by pytest -s
    assert growth < 3 * len(raw) / 2**20, f"RSS grew {growth:.0f} MiB for a {len(raw) >> 20} MiB message"
