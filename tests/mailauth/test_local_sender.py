"""Issue 15 item 10: the MX refuses an unauthenticated envelope sender in one of our own
domains unless SPF passes for it ([smtp] reject_unauthenticated_local_sender, on by
default): 550 5.7.1 at MAIL FROM. A real `maild serve` and the real test DNS server."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.smtp.conftest import Transcript, messages

FORGED = b"From: alice@example.test\r\nSubject: from our own domain\r\n\r\nhi\r\n"


def _mx(server: MaildServer) -> Transcript:
    t = Transcript(server.host, server.ports["smtp"])
    t.greeting()
    t.cmd("EHLO client.remote.example", 250)
    return t


def test_local_sender_without_spf_is_refused(maild_factory: Callable[..., MaildServer],
                                            dns_zone: DnsZone) -> None:
    server = maild_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 1.0})
    t = _mx(server)
    for sender in ("alice@example.test", "Alice@EXAMPLE.TEST", "nobody@example.test"):
        reply = t.cmd(f"MAIL FROM:<{sender}>", 550)
        assert reply.text == "5.7.1 Sender address in a local domain needs authentication"
        t.cmd("RCPT TO:<bob@example.test>", 503)  # no transaction was started
    # SPF that does not pass is no better than none (RFC 7208 §2.6).
    dns_zone.set("example.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all")
    t.cmd("MAIL FROM:<alice@example.test>", 550)
    # Other senders, and the null reverse-path, are not affected.
    assert t.message("someone@remote.example", ["bob@example.test"],
                     b"From: someone@remote.example\r\nSubject: remote\r\n\r\nx\r\n").code == 250
    assert t.message("", ["bob@example.test"],
                     b"From: mailer-daemon@remote.example\r\nSubject: dsn\r\n\r\nx\r\n").code == 250
    t.cmd("QUIT", 221)
    assert not [m for m in messages(server, "bob@example.test") if b"our own domain" in m]


def test_local_sender_with_spf_pass_is_accepted(maild_factory: Callable[..., MaildServer],
                                               dns_zone: DnsZone) -> None:
    dns_zone.set("example.test", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    server = maild_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 1.0})
    t = _mx(server)
    assert t.message("alice@example.test", ["bob@example.test"], FORGED).code == 250, t.dump()
    t.cmd("QUIT", 221)
    (stored,) = messages(server, "bob@example.test")
    assert b"spf=pass smtp.mailfrom=alice@example.test" in stored


def test_the_policy_can_be_turned_off(maild_factory: Callable[..., MaildServer],
                                      dns_zone: DnsZone) -> None:
    server = maild_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 1.0},
                           smtp={"reject_unauthenticated_local_sender": False})
    t = _mx(server)
    assert t.message("alice@example.test", ["bob@example.test"], FORGED).code == 250, t.dump()
    t.cmd("QUIT", 221)
    (stored,) = messages(server, "bob@example.test")
    assert b"spf=none smtp.mailfrom=alice@example.test" in stored
