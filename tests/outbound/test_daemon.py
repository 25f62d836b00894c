"""End to end through a real `maild serve`: submission over STARTTLS+AUTH, the queue
runner in the daemon, the `maild queue` commands, kill -9 in the middle of a delivery."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from typing import Any

from maild.config import Address, DnsConfig
from maild.dns.resolver import Resolver
from maild.mailauth import dkim
from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Remotes, daemon, message, mx_zone, wait_until
from tests.outbound.dsn_helpers import parse_dsn


def submit(server: MaildServer, recipients: list[str], raw: bytes) -> None:
    context = ssl.create_default_context(cafile=str(server.cafile))
    with smtplib.SMTP(server.host, server.ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice@example.test", "alice-secret")
        smtp.sendmail("alice@example.test", recipients, raw)


def queued(server: MaildServer) -> list[dict[str, Any]]:
    """The queue as the daemon has committed it (a read next to the running daemon)."""
    store = server.store()
    try:
        return store.queue_entries()
    finally:
        store.close()


def last_errors(server: MaildServer) -> list[str]:
    return [e["last_error"] or "" for e in queued(server)]


def queue(server: MaildServer, *args: str) -> str:
    result = server.cli("queue", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_submitted_mail_delivered_with_valid_dkim(maild_factory: Callable[..., MaildServer],
                                                  dns_zone: DnsZone, remotes: Remotes) -> None:
    server = daemon(maild_factory, dns_zone, remotes)
    keys: list[dict[str, Any]] = dkim.generate_keys("example.test")
    server.set_dkim_keys("example.test", keys)
    for key in keys:
        dns_zone.set(f"{key['selector']}._domainkey.example.test", "TXT", key["public_record"])
    mx = remotes.start("127.0.0.2", starttls=True)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    raw = message(body="Hi Carol,\r\n.leading dot\r\n")
    submit(server, [f"carol@{REMOTE}", "bob@example.test"], raw)
    (got,) = mx.wait_for(1)
    assert got.rcpt_tos == [f"carol@{REMOTE}"] and got.tls
    assert got.content.endswith(raw)  # Received + DKIM-Signature fields prepended
    resolver = Resolver(DnsConfig([Address(dns_zone.host, dns_zone.port)], 2.0))
    results = dkim.verify_sync(got.content, resolver)
    assert [(r.result, r.algorithm) for r in results] == [("pass", "rsa-sha256"),
                                                          ("pass", "ed25519-sha256")]
    wait_until(lambda: not queued(server), what="empty queue")


def test_tempfail_then_retry_all(maild_factory: Callable[..., MaildServer], dns_zone: DnsZone,
                                 remotes: Remotes) -> None:
    server = daemon(maild_factory, dns_zone, remotes)
    mx = remotes.start("127.0.0.2")
    mx.handler.data_replies.append("451 4.3.0 greylisted, come back later")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    submit(server, [f"carol@{REMOTE}"], message())
    wait_until(lambda: any("greylisted" in e for e in last_errors(server)), what="deferred")
    row = queue(server, "list").splitlines()[1]
    entry_id = row.split()[0]
    assert "alice@example.test" in row and REMOTE in row and f"carol@{REMOTE}" in row
    assert " 1 " in row and "in 5m" in row
    shown = queue(server, "show", entry_id[:6])
    assert f"<carol@{REMOTE}> pending: 451 4.3.0 greylisted, come back later" in shown
    assert mx.messages == []
    assert "1 entries due now" in queue(server, "retry", "--all")
    mx.wait_for(1)
    wait_until(lambda: not queued(server), what="empty queue")


def test_queue_bounce_and_delete(maild_factory: Callable[..., MaildServer], dns_zone: DnsZone,
                                 remotes: Remotes) -> None:
    server = daemon(maild_factory, dns_zone, remotes)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))  # refused: stays deferred
    submit(server, [f"carol@{REMOTE}"], message(subject="to bounce"))
    submit(server, [f"dave@{REMOTE}"], message(subject="to delete"))
    wait_until(lambda: sum("4.4.1 connect to 127.0.0.2" in e for e in last_errors(server)) == 2,
               what="two deferred entries")
    rows = {line.split()[4]: line.split()[0]
            for line in queue(server, "list").splitlines()[1:-1]}
    assert "bounced" in queue(server, "bounce", rows[f"carol@{REMOTE}"])
    assert "deleted" in queue(server, "delete", rows[f"dave@{REMOTE}"])
    assert "0 entries" in queue(server, "list")
    missing = server.cli("queue", "show", "ffffffff")
    assert missing.returncode == 2 and "no queue entry" in missing.stderr
    server.stop()
    store = server.store()
    try:
        inbox = store.mailbox("alice@example.test", "INBOX")
        assert inbox is not None
        reports = [store.read("alice@example.test", inbox.id, uid)
                   for uid in store.uids("alice@example.test", inbox.id)]
    finally:
        store.close()
    assert len(reports) == 1
    assert b"Subject: to bounce" in reports[0] and b"returned to the sender by the mail " \
        b"administrator" in reports[0]
    _, _, (rcpt,) = parse_dsn(reports[0])
    assert rcpt["Diagnostic-Code"].startswith("X-maild; returned to the sender by the mail "
                                              "administrator; last error: 451 4.4.1 connect")
    assert "Remote-MTA" not in rcpt


def test_kill9_mid_delivery_loses_nothing(maild_factory: Callable[..., MaildServer],
                                          dns_zone: DnsZone, remotes: Remotes) -> None:
    server = daemon(maild_factory, dns_zone, remotes)
    mx = remotes.start("127.0.0.2")
    mx.handler.rcpt_replies[f"b@{REMOTE}"] = "450 4.2.1 busy"
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    submit(server, [f"a@{REMOTE}", f"b@{REMOTE}"], message())
    mx.wait_for(1)  # a@ acknowledged; b@ deferred
    wait_until(lambda: any("busy" in e for e in last_errors(server)), what="b@ deferred")
    mx.handler.rcpt_replies.clear()
    mx.handler.stall = True
    queue(server, "retry", "--all")
    assert mx.handler.stalled.wait(20)  # maild has sent b@'s DATA and waits for the reply
    server.kill()
    mx.handler.release.set()
    server.start()
    mx.wait_for(2)
    assert [m.rcpt_tos for m in mx.messages] == [[f"a@{REMOTE}"], [f"b@{REMOTE}"]]
    wait_until(lambda: not queued(server), what="empty queue")


def test_sigterm_mid_delivery_keeps_the_entry_due(maild_factory: Callable[..., MaildServer],
                                                  dns_zone: DnsZone, remotes: Remotes) -> None:
    server = daemon(maild_factory, dns_zone, remotes)
    mx = remotes.start("127.0.0.2")
    mx.handler.stall = True
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    submit(server, [f"carol@{REMOTE}"], message())
    assert mx.handler.stalled.wait(20)
    assert server.stop() == 0  # the runner cuts its connection; shutdown does not wait on it
    mx.handler.release.set()
    (entry,) = queued(server)
    assert entry["attempts"] == 0  # the cut attempt is not counted
    server.start()
    (got,) = mx.wait_for(1)
    assert got.rcpt_tos == [f"carol@{REMOTE}"]
    wait_until(lambda: not queued(server), what="empty queue")
