"""A real Postfix relays 200 messages to maild's MX over STARTTLS, with Postfix's defaults.

Issue 19 item 1: Postfix, at its default concurrency (default_destination_concurrency_limit
20, against maild's default max_connections_per_ip 20), was deferred with `421 4.7.0 Too
many connections` 12-23 times per 200 messages, only over TLS. Postfix cannot reuse a TLS
connection (without tlsproxy), so each message is a new STARTTLS session: its smtp client
QUITs and reconnects at once, and found the slot of the session it had just ended still
taken while TLS closed. maild/util/session.py frees the slot when the session ends.

The Postfix (tests/fixtures/postfix.py, Debian's, as root, its own directories) relays
every recipient of example.test to maild's MX port with `smtp_tls_security_level =
encrypt` (TLS or no delivery; the certificate is not verified on loopback); everything else
is Postfix's default. smtp-source injects the messages into Postfix's smtpd. maild runs
with its defaults except the per-IP message rate (120/min; every message here comes from
127.0.0.1; tests/smtp/test_limits.py tests the rate).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

import pytest

from maild.store import Store
from maild.util.message import parse_header
from tests.conftest import MaildServer
from tests.fixtures import postfix

pytestmark = pytest.mark.skipif(postfix.unavailable() is not None, reason=str(postfix.unavailable()))

MESSAGES = 200
RECIPIENT = "alice@example.test"
WAIT = 120.0  # seconds for all messages to reach maild
# What Postfix logs when maild turns it away or it has to try again later.
DEFERRAL = re.compile(r"\b421\b|status=deferred|Too many connections|status=bounced", re.IGNORECASE)

RELAY_SETTINGS = """\
relay_domains = example.test
transport_maps = inline:{{ example.test=relay:[127.0.0.1]:{port} }}
smtp_tls_security_level = encrypt
smtp_tls_loglevel = 1
"""


def inbox_uids(server: MaildServer, user: str) -> int:
    store = Store(server.data_dir, server.config.store)
    try:
        box = store.mailbox(user, "INBOX")
        assert box is not None
        return len(store.uids(user, box.id))
    finally:
        store.close()


def first_received(raw: bytes) -> str:
    """The topmost Received: field (the one maild added), unfolded."""
    return " ".join((parse_header(raw).first("received") or "").split())


def test_postfix_relays_200_messages_over_starttls_without_deferral(
        maild_factory: Callable[..., MaildServer]) -> None:
    server = maild_factory(smtp={"messages_per_minute_per_ip": 0})
    assert server.config.smtp.max_connections_per_ip == 20  # maild's default, as issue 19 met it
    settings = RELAY_SETTINGS.format(port=server.ports["smtp"])
    with postfix.running("maild-test-postfix-", settings) as peer:
        assert peer.postconf("default_destination_concurrency_limit") == "20"  # Postfix's default
        assert peer.postconf("smtp_tls_connection_reuse") == "no"  # one TLS session per message
        inject = subprocess.run(
            ["smtp-source", "-s", "10", "-m", str(MESSAGES), "-l", "2000", "-M", "client.peer.test",
             "-f", "sender@peer.test", "-t", RECIPIENT, f"127.0.0.1:{peer.smtp_port}"],
            capture_output=True, text=True, timeout=60)
        assert inject.returncode == 0, inject.stdout + inject.stderr
        deadline = time.monotonic() + WAIT
        delivered = 0
        while True:
            log = peer.log()
            deferrals = [line for line in log.splitlines() if DEFERRAL.search(line)]
            assert not deferrals, "Postfix was deferred:\n" + "\n".join(deferrals[:20])
            delivered = inbox_uids(server, RECIPIENT)
            if delivered >= MESSAGES and log.count("status=sent") >= MESSAGES:
                break
            assert time.monotonic() < deadline, (
                f"{delivered}/{MESSAGES} delivered after {WAIT:.0f} s; Postfix's log:\n{log[-4000:]}")
            time.sleep(0.5)
        sent = [line for line in log.splitlines() if "status=sent" in line]
        assert len(sent) == MESSAGES, sent[:5]
        assert all(" relay=127.0.0.1[127.0.0.1]:" in line and "(250 " in line for line in sent), sent[:5]
        assert "TLS connection established to 127.0.0.1" in log  # smtp_tls_loglevel 1 says so
    assert delivered == MESSAGES
    assert server.stop() == 0
    store = server.store()
    try:
        box = store.mailbox(RECIPIENT, "INBOX")
        assert box is not None
        received = [first_received(store.read(RECIPIENT, box.id, uid)) for uid in store.uids(RECIPIENT, box.id)]
    finally:
        store.close()
    assert len(received) == MESSAGES
    # RFC 3848 §2 ESMTPS: every message came over TLS, from Postfix's HELO name
    plain = [r for r in received
             if not re.search(r"^from peer\.example\.test \(\[127\.0\.0\.1\]\) \(using TLSv1\.[23] .*"
                              r"with ESMTPS id ", r)]
    assert not plain, plain[:3]
    fsck = server.fsck()
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
