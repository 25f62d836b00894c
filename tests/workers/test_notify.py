"""systemd's notify protocol for a tree of workers (sd_notify(3), systemd/maild.service
Type=notify, WatchdogSec): the supervisor alone speaks to systemd. READY=1 comes once, after
every worker is ready; the supervisor pings the watchdog; a worker whose reactor is wedged
(SIGSTOP stands in for a blocking call) is killed and replaced while the tree keeps serving
and pinging; STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
from collections.abc import Callable

import pytest

from tests.conftest import MaildServer
from tests.test_sd_notify import received
from tests.workers.conftest import wait_for_log, wait_replaced

WATCHDOG = 2.0  # seconds (a loaded two-core machine must not look wedged)


def test_ready_once_watchdog_and_a_wedged_worker(workers_factory: Callable[..., MaildServer],
                                                 notify_socket: socket.socket,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    notify = notify_socket
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG * 1e6)))
    server = workers_factory()  # returns once the supervisor logged "maild ready"
    messages = received(notify, 2.5)
    texts = [m for _, m in messages]
    assert texts.count("READY=1") == 1, texts  # one for the tree, not one per worker
    pings = [t for t, m in messages if m == "WATCHDOG=1"]
    assert len(pings) >= 2, texts  # every WATCHDOG / 2
    # The ready line names both workers, and each had said so before it.
    log = server.log()
    ready = log.index("maild ready")
    for pid in server.worker_pids():
        assert log.index(f"[{pid}]: worker") < ready, log

    victim = server.worker_pids()[-1]
    offset = len(server.log())

    os.kill(victim, signal.SIGSTOP)
    try:
        wait_for_log(server, rf"worker \d \(pid {victim}\) sent no watchdog ping in [\d.]+ s: killed",
                     offset, timeout=4 * WATCHDOG)
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    wait_replaced(server, victim)
    # The supervisor kept pinging systemd throughout; the tree serves.
    assert "WATCHDOG=1" in [m for _, m in received(notify, WATCHDOG)]
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=10) as client:
        assert client.noop()[0] == 250
    assert server.stop() == 0
    after = [m for _, m in received(notify, 0.5)]
    assert "STOPPING=1" in after
    assert re.search(r"died \(killed by signal 9\)", server.log())
