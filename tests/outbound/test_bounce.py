"""Per-recipient results and DSNs (RFC 3464): 5xx bounces at once with the remote's
reply, mixed results in one transaction, never a DSN for the null sender."""

from __future__ import annotations

from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone
from tests.outbound.dsn_helpers import parse_dsn


def test_5xx_bounces_with_remote_reply_in_inbox(outbound: Outbound, remotes: Remotes,
                                                dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.rcpt_replies[f"carol@{REMOTE}"] = "550 5.1.1 <carol@remote.test>: no such user here"
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = message(subject="for carol")
    outbound.enqueue(raw, "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    assert outbound.entries() == [] and mx.messages == []
    (report,) = outbound.inbox("alice@example.test")
    msg, text, (rcpt,) = parse_dsn(report)
    assert msg["To"].addresses[0].addr_spec == "alice@example.test"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.test"
    assert "550 5.1.1 <carol@remote.test>: no such user here" in text
    assert rcpt == {"Final-Recipient": f"rfc822; carol@{REMOTE}", "Action": "failed",
                    "Status": "5.1.1", "Remote-MTA": "dns; mx1.remote.test",
                    "Diagnostic-Code": "smtp; 550 5.1.1 <carol@remote.test>: no such user here",
                    "Last-Attempt-Date": rcpt["Last-Attempt-Date"]}
    returned = msg.get_payload()[2].get_payload()  # type: ignore[index]
    assert "Subject: for carol" in str(returned)


def test_mixed_results_in_one_transaction(outbound: Outbound, remotes: Remotes,
                                          dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.rcpt_replies.update({f"bad@{REMOTE}": "550 5.1.1 unknown",
                                    f"busy@{REMOTE}": "452 4.2.2 over quota, try later"})
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), "alice@example.test",
                     [f"good@{REMOTE}", f"bad@{REMOTE}", f"busy@{REMOTE}", f"also@{REMOTE}"])
    outbound.run()
    (got,) = mx.messages
    assert got.rcpt_tos == [f"good@{REMOTE}", f"also@{REMOTE}"]
    (entry,) = outbound.entries()
    states = {r["address"]: r["state"] for r in entry["recipients"]}
    assert states == {f"good@{REMOTE}": "delivered", f"bad@{REMOTE}": "bounced",
                      f"busy@{REMOTE}": "pending", f"also@{REMOTE}": "delivered"}
    (report,) = outbound.inbox("alice@example.test")
    _, _, rcpts = parse_dsn(report)
    assert [r["Final-Recipient"] for r in rcpts] == [f"rfc822; bad@{REMOTE}"]
    # the retry goes to the one still pending, and nobody else gets a second copy
    mx.handler.rcpt_replies.clear()
    outbound.clock.advance(300)
    outbound.run()
    assert [m.rcpt_tos for m in mx.messages] == [[f"good@{REMOTE}", f"also@{REMOTE}"],
                                                 [f"busy@{REMOTE}"]]
    assert outbound.entries() == []


def test_data_5xx_bounces_every_accepted_recipient(outbound: Outbound, remotes: Remotes,
                                                    dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.data_replies.append("554 5.7.1 message refused as spam")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), "alice@example.test", [f"a@{REMOTE}", f"b@{REMOTE}"])
    outbound.run()
    _, text, rcpts = parse_dsn(outbound.inbox("alice@example.test")[0])
    assert [r["Status"] for r in rcpts] == ["5.7.1", "5.7.1"]
    assert text.count("554 5.7.1 message refused as spam") == 2


def test_no_dsn_for_null_sender(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.rcpt_replies[f"carol@{REMOTE}"] = "550 5.1.1 unknown"
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), "", [f"carol@{REMOTE}"])
    outbound.run()
    assert outbound.entries() == []
    assert outbound.inbox("alice@example.test") == []


def test_dsn_to_remote_sender_is_queued_with_null_sender(outbound: Outbound, remotes: Remotes,
                                                          dns_zone: DnsZone) -> None:
    mx = remotes.start("127.0.0.2")
    mx.handler.rcpt_replies[f"carol@{REMOTE}"] = "550 5.1.1 unknown"
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.enqueue(message(), f"forwarder@{REMOTE}", [f"carol@{REMOTE}"])
    outbound.run()
    (dsn_entry,) = outbound.entries()
    assert dsn_entry["sender"] == ""
    assert [r["address"] for r in dsn_entry["recipients"]] == [f"forwarder@{REMOTE}"]
    outbound.run()  # the DSN itself is delivered to the sender's MX
    (got,) = mx.messages
    assert got.mail_from == "<>"
    assert b"multipart/report" in got.content
    assert outbound.entries() == []
