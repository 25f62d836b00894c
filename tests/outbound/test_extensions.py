"""ESMTP extensions the client uses: PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
(RFC 6152), SMTPUTF8 (RFC 6531), and HELO for a server without EHLO."""

from __future__ import annotations

from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone
from tests.outbound.dsn_helpers import parse_dsn


def test_pipelining_when_offered(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.pipelining = True
    mx.handler.rcpt_replies[f"x@{REMOTE}"] = "550 5.1.1 unknown"
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), "alice@example.test", [f"a@{REMOTE}", f"x@{REMOTE}", f"b@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert got.rcpt_tos == [f"a@{REMOTE}", f"b@{REMOTE}"]  # replies matched in order
    _, _, (rcpt,) = parse_dsn(outbound.inbox("alice@example.test")[0])
    assert rcpt["Final-Recipient"] == f"rfc822; x@{REMOTE}"


def test_size_parameter(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = message()
    outbound.enqueue(raw, "alice@example.test", [f"a@{REMOTE}"])
    outbound.run()
    assert mx.messages[0].mail_options == [f"SIZE={len(raw) + 3}"]  # RFC 1870 §6, with ".\r\n"


def test_size_over_remote_limit_bounces_unsent(outbound: Outbound, remotes: Remotes,
                                               dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2", data_size_limit=1000)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(body=("y" * 70 + "\r\n") * 20), "alice@example.test", [f"a@{REMOTE}"])
    outbound.run()
    assert mx.messages == [] and outbound.entries() == []
    _, text, (rcpt,) = parse_dsn(outbound.inbox("alice@example.test")[0])
    assert rcpt["Status"] == "5.3.4" and "exceeds the limit of 1000" in text
    # maild decided this from the server's SIZE, unsent: the remote said nothing, so no
    # Remote-MTA and no "smtp;" diagnostic (RFC 3464 §2.3.5, §2.3.6)
    assert "Remote-MTA" not in rcpt
    assert rcpt["Diagnostic-Code"].startswith("X-maild; message size ")
    assert "reply from" not in text


def test_8bitmime_and_smtputf8(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = "Subject: grüße\r\nFrom: alice@example.test\r\n\r\nbödy\r\n".encode()
    outbound.enqueue(raw, "alice@example.test", [f"jürgen@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert set(got.mail_options) == {f"SIZE={len(raw) + 3}", "BODY=8BITMIME", "SMTPUTF8"}
    assert got.rcpt_tos == [f"jürgen@{REMOTE}"] and got.content == raw


def test_smtputf8_needed_but_not_offered_bounces(outbound: Outbound, remotes: Remotes,
                                                 dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2", enable_SMTPUTF8=False)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), "alice@example.test", [f"jürgen@{REMOTE}"])
    outbound.run()
    assert mx.messages == [] and outbound.entries() == []
    _, _, (rcpt,) = parse_dsn(outbound.inbox("alice@example.test")[0])
    assert rcpt["Status"] == "5.6.7"


def test_helo_when_ehlo_is_unknown(outbound: Outbound, remotes: Remotes,
                                    dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.ehlo = False
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), "alice@example.test", [f"a@{REMOTE}"])
    outbound.run()
    assert [m.mail_options for m in mx.messages] == [[]]  # no ESMTP parameters after HELO
