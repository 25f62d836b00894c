"""The Prometheus endpoint (`[metrics] listen`, maild/util/metrics.py): a real HTTP scrape
of /metrics after SMTP, IMAP and POP3 traffic shows what happened."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from maild.util.metrics import smtp_reason
from tests.conftest import USERS, MaildServer
from tests.fixtures.ports import free_port

ALICE = "alice@example.test"


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_scrape_after_traffic(maild_factory: Callable[..., MaildServer]) -> None:
    port = free_port()
    server = maild_factory(metrics={"listen": [f"127.0.0.1:{port}"]})
    before = scrape(port)
    assert value(before, "maild_sessions_total", protocol="smtp") == 0
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as client:
        client.sendmail("someone@remote.example", [ALICE],
                        b"Subject: hi\r\nFrom: someone@remote.example\r\n\r\nhello\r\n")
        assert client.mail("someone@remote.example")[0] == 250
        assert client.rcpt("nobody@example.test")[0] == 550
        client.rset()
    context = ssl.create_default_context(cafile=str(server.cafile))
    imap = imaplib.IMAP4_SSL(server.host, server.ports["imaps"], ssl_context=context, timeout=30)
    try:
        try:
            imap.login(ALICE, "wrong password")
        except imaplib.IMAP4.error:
            pass
        imap.login(ALICE, USERS[ALICE])
        imap.select("INBOX")
        imap.fetch("1", "(BODY.PEEK[])")
    finally:
        imap.logout()
    pop = poplib.POP3_SSL(server.host, server.ports["pop3s"], context=context, timeout=30)
    pop.user(ALICE)
    pop.pass_(USERS[ALICE])
    pop.stat()
    pop.quit()

    after = scrape(port)
    assert value(after, "maild_sessions_total", protocol="smtp") == 1
    assert value(after, "maild_sessions_total", protocol="imap") == 1
    assert value(after, "maild_sessions_total", protocol="pop3") == 1
    assert value(after, "maild_smtp_messages_accepted_total", service="smtp") == 1
    assert value(after, "maild_smtp_rejections_total", service="smtp", reason="unknown_user",
                 kind="permanent") == 1
    assert value(after, "maild_auth_failures_total") == 1
    assert value(after, "maild_command_duration_seconds_count", protocol="imap", command="FETCH") == 1
    assert value(after, "maild_command_duration_seconds_count", protocol="imap", command="LOGIN") == 2
    assert value(after, "maild_command_duration_seconds_count", protocol="pop3", command="STAT") == 1
    # The message was committed to a shard: one group commit at least, its latency observed.
    assert value(after, "maild_store_commit_duration_seconds_count", environment="shard") >= 1
    assert value(after, "maild_store_commit_batch_size_sum", environment="shard") >= 1
    # Every configured filter ran at end of DATA, timed.
    assert any(name == "maild_filter_duration_seconds_count" and ("phase", "data") in labels and v >= 1
               for (name, labels), v in after.items())
    assert value(after, "maild_queue_entries") == 0
    assert value(after, "maild_queue_oldest_age_seconds") == 0
    assert value(after, "maild_start_time_seconds") > 1.7e9
    assert "metrics 127.0.0.1" in server.log()


def test_reasons() -> None:
    assert smtp_reason(554, "5.7.1", "Message rejected: virus found: Eicar-Signature") == "virus"
    assert smtp_reason(550, "5.7.1", "Message refused as spam") == "spam"
    assert smtp_reason(550, "5.7.1", "Rejected by the DMARC policy of example.com") == "dmarc"
    assert smtp_reason(451, "4.7.1", "Message rate limit exceeded, try again later") == "rate"
    assert smtp_reason(552, "5.3.4", "Message size exceeds fixed maximum message size") == "size"
    assert smtp_reason(530, "5.7.0", "Authentication required") == "auth"
    assert smtp_reason(535, "5.7.8", "Authentication credentials invalid") == "auth"
    assert smtp_reason(554, "5.7.1", "Relay access denied") == "relay"
