"""Retries with exponential backoff on a controllable clock, expiry, delay warnings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from maild.queue.runner import backoff
from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone
from tests.outbound.dsn_helpers import parse_dsn

HOUR = 3600.0


def test_backoff_schedule() -> None:
    waits = [backoff(n, 300, 4 * HOUR) for n in range(1, 9)]
    assert waits == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]


@pytest.fixture
def tempfailing(outbound: Outbound, remotes: Remotes, dns_zone: DnsZone) -> Outbound:
    mx = remotes.start("127.0.0.2")
    mx.handler.data_replies[:] = ["451 4.3.0 try again later"] * 3
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    outbound.mx = mx  # type: ignore[attr-defined]
    return outbound


def test_tempfail_then_accept_delivered_on_retry(tempfailing: Outbound) -> None:
    out = tempfailing
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    expected_waits = [300, 600, 1200]
    for attempt, wait in enumerate(expected_waits, start=1):
        out.run()
        (entry,) = out.entries()
        assert entry["attempts"] == attempt
        assert entry["last_error"] == "451 4.3.0 try again later"
        assert entry["next_attempt"] - entry["last_attempt"] == pytest.approx(wait)
        out.clock.advance(wait - 1)
        out.run()  # not due yet: nothing happens
        assert out.entries()[0]["attempts"] == attempt
        out.clock.advance(1)
    out.run()
    assert len(out.mx.messages) == 1  # type: ignore[attr-defined]
    assert out.entries() == []
    assert out.inbox("alice@example.test") == []  # no warning: younger than 4 h


def test_connection_refused_is_deferred(outbound: Outbound, dns_zone: DnsZone) -> None:
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))  # nothing listens there
    outbound.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    outbound.run()
    (entry,) = outbound.entries()
    assert entry["recipients"][0]["state"] == "pending"
    assert "4.4.1 connect to 127.0.0.2" in entry["last_error"]


def test_expiry_bounces_with_last_error(tempfailing: Outbound) -> None:
    out = tempfailing
    out.mx.handler.data_replies[:] = ["451 4.3.0 try again later"] * 100  # type: ignore[attr-defined]
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    out.clock.advance(5 * 24 * HOUR)  # older than max_age at the next failure
    out.run()
    assert out.entries() == []
    reports = out.inbox("alice@example.test")
    assert len(reports) == 1  # the expiry DSN; no delay warning once given up
    msg, text, (rcpt,) = parse_dsn(reports[0])
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert "has given up" in text and "451 4.3.0 try again later" in text
    assert rcpt["Action"] == "failed" and rcpt["Diagnostic-Code"] == "smtp; 451 4.3.0 try again later"


def test_delay_warning_once(tempfailing: Outbound) -> None:
    out = tempfailing
    out.enqueue(message(subject="slow"), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    assert out.inbox("alice@example.test") == []
    for _ in range(2):
        out.clock.advance(4 * HOUR)
        out.run()
    (warning,) = out.inbox("alice@example.test")
    msg, text, (rcpt,) = parse_dsn(warning)
    assert rcpt["Action"] == "delayed" and "Will-Retry-Until" in rcpt
    assert "you do not need to send it again" in text
    (entry,) = out.entries()
    assert entry["warned"] is True and entry["recipients"][0]["state"] == "pending"
    out.clock.advance(4 * HOUR)
    out.run()  # the 4th attempt is accepted
    assert len(out.mx.messages) == 1  # type: ignore[attr-defined]
    assert len(out.inbox("alice@example.test")) == 1


def test_no_delay_warning_when_disabled(outbound_factory: Callable[..., Outbound], remotes: Remotes,
                                        dns_zone: DnsZone) -> None:
    out = outbound_factory(delay_warning=0.0)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))  # refused
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.clock.advance(10 * HOUR)
    out.run()
    assert out.inbox("alice@example.test") == []
