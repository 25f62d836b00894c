"""Mail authentication end to end: a real `maild serve` pointed at the real DNS server,
driven with smtplib on the MX and submission ports."""

from __future__ import annotations

import smtplib
import ssl
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from maild.mailauth import dkim
from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.mailauth.conftest import message, publish
from tests.mailauth.test_dkim import _RUN_DKIMVERIFY, DKIMVERIFY


@pytest.fixture
def server(maild_factory: Callable[..., MaildServer], dns_zone: DnsZone) -> MaildServer:
    return maild_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 1.0})


def stored(server: MaildServer, user: str, mailbox: str) -> list[bytes]:
    """The messages in a mailbox, read from the store while the daemon is stopped."""
    server.stop()
    store = server.store()
    try:
        box = store.mailbox(user, mailbox)
        assert box is not None
        return [store.read(user, box.id, uid) for uid in store.uids(user, box.id)]
    finally:
        store.close()


def send(server: MaildServer, sender: str, raw: bytes) -> None:
    with smtplib.SMTP(server.host, server.ports["smtp"], local_hostname="client.example.net",
                      timeout=30) as smtp:
        smtp.sendmail(sender, ["bob@example.test"], raw)


def test_inbound_checks_and_dmarc_policy(server: MaildServer, dns_zone: DnsZone) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns_zone.set("spoofed.example", "TXT", "v=spf1 ip4:192.0.2.1 -all")
    dns_zone.set("_dmarc.example.org", "TXT", "v=DMARC1; p=reject")
    dns_zone.set("_dmarc.spoofed.example", "TXT", "v=DMARC1; p=reject")
    dns_zone.set("_dmarc.junk.example", "TXT", "v=DMARC1; p=quarantine")

    send(server, "bounce@example.org", message(subject="aligned"))

    with pytest.raises(smtplib.SMTPDataError) as rejected:  # RFC 7489 §10.3
        send(server, "bounce@spoofed.example", message(from_addr="ceo@spoofed.example"))
    assert rejected.value.smtp_code == 550
    assert rejected.value.smtp_error.startswith(b"5.7.1")

    send(server, "bounce@junk.example", message(from_addr="a@junk.example", subject="junk"))

    dns_zone.timeout("slow.example")
    with pytest.raises(smtplib.SMTPSenderRefused) as deferred:
        send(server, "bounce@slow.example", message(from_addr="a@slow.example"))
    assert deferred.value.smtp_code == 451
    assert deferred.value.smtp_error.startswith(b"4.7.")

    inbox = stored(server, "bob@example.test", "INBOX")
    assert len(inbox) == 1
    header = inbox[0].split(b"\r\n\r\n", 1)[0]
    assert b"Subject: aligned" in header
    assert b"Authentication-Results: mx.example.test;" in header
    assert b"spf=pass smtp.mailfrom=bounce@example.org" in header
    assert b"dmarc=pass (p=reject dis=none) header.from=example.org" in header
    assert header.count(b"Authentication-Results:") == 1
    junk = stored(server, "bob@example.test", "Junk")
    assert len(junk) == 1 and b"Subject: junk" in junk[0]
    assert b"dmarc=fail (p=quarantine dis=quarantine)" in junk[0]


def test_forged_authentication_results_are_removed(server: MaildServer,
                                                   dns_zone: DnsZone) -> None:
    dns_zone.set("example.org", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    forged = ("Authentication-Results: mx.example.test; dmarc=pass\r\n"  # RFC 8601 §5
              "Authentication-Results: upstream.example.net; spf=pass\r\n")
    send(server, "bounce@example.org", message(extra=forged))
    (raw,) = stored(server, "bob@example.test", "INBOX")
    assert b"mx.example.test; dmarc=pass" not in raw
    assert b"Authentication-Results: upstream.example.net; spf=pass" in raw


def test_submission_is_signed_and_verifies_with_dkimverify(
        server: MaildServer, dns_zone: DnsZone) -> None:
    keys: list[dict[str, Any]] = dkim.generate_keys("example.test")
    server.set_dkim_keys("example.test", keys)
    publish(dns_zone, "example.test", keys)

    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice@example.test", "alice-secret")
        smtp.sendmail("alice@example.test", ["bob@example.test"],
                      message(from_addr="Alice <alice@example.test>", subject="signed"))
    (raw,) = stored(server, "bob@example.test", "INBOX")
    assert raw.count(b"DKIM-Signature:") == 2
    for index in ("0", "1"):
        run = subprocess.run([sys.executable, "-c", _RUN_DKIMVERIFY, str(dns_zone.port),
                              str(DKIMVERIFY), index], input=raw, capture_output=True, timeout=60)
        assert run.stdout.strip() == b"signature ok", run.stdout + run.stderr
