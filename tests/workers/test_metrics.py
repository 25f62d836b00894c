"""/metrics of a tree of workers (maild/util/metrics.py, PROMETHEUS_MULTIPROC_DIR): the
primary serves the sum of every worker's counters — sessions and messages that went
through the other worker count too, also after that worker was killed and replaced — and
one value for each gauge."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from tests.conftest import MaildServer, wait_gone
from tests.fixtures.ports import free_port
from tests.smtp.conftest import Transcript as SmtpTranscript
from tests.test_metrics import scrape, value
from tests.workers.conftest import on_each_worker, wait_replaced


def test_metrics_sum_every_worker(workers_factory: Callable[..., MaildServer]) -> None:
    port = free_port()
    server = workers_factory(metrics={"listen": [f"127.0.0.1:{port}"]})
    before = scrape(port)
    assert value(before, "maild_sessions_total", protocol="smtp") == 0
    assert value(before, "maild_start_time_seconds") > 0
    assert value(before, "maild_queue_entries") == 0

    def connect() -> SmtpTranscript:
        t = SmtpTranscript(server.host, server.ports["smtp"])
        t.greeting()
        return t
    sessions = on_each_worker(server, connect, lambda t: t.sock, lambda t: t.close())
    opened = value(scrape(port), "maild_sessions_total", protocol="smtp")
    assert opened >= 2  # the extra connections on_each_worker closed count as well
    body = b"From: a@remote.example\r\nSubject: counted\r\n\r\nx\r\n"
    for t in sessions.values():
        t.cmd("EHLO client.example", 250)
        assert t.message("a@remote.example", ["alice@example.test"], body).code == 250
        t.cmd("QUIT", 221)
    after = scrape(port)
    assert value(after, "maild_smtp_messages_accepted_total", service="smtp") == 2
    # A worker that is not the primary dies: what it counted stays in the sum.
    primary = server.worker_pids()[0]
    other = [p for p in sessions if p != primary][0]
    os.kill(other, signal.SIGKILL)
    wait_gone([other])
    wait_replaced(server, other)
    assert value(scrape(port), "maild_smtp_messages_accepted_total", service="smtp") == 2
