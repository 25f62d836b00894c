"""The process tree of ``[server] workers = 2`` (maild/supervisor.py): both workers accept on
the one listener, SIGTERM of the supervisor stops every worker cleanly (sessions get their
protocol's goodbye), SIGHUP reaches every worker, a worker killed with SIGKILL is restarted
while the other serves on, and a killed supervisor takes its workers with it."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Callable

from tests.conftest import MaildServer, wait_gone
from tests.smtp.conftest import Transcript as SmtpTranscript
from tests.workers.conftest import WORKERS, on_each_worker, wait_for_log, wait_replaced, worker_of


def smtp(server: MaildServer) -> SmtpTranscript:
    t = SmtpTranscript(server.host, server.ports["smtp"])
    t.greeting()
    return t


def smtp_on_each_worker(server: MaildServer) -> dict[int, SmtpTranscript]:
    return on_each_worker(server, lambda: smtp(server), lambda t: t.sock, lambda t: t.sock.close())


def test_every_worker_serves_the_shared_listener(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory()
    pids = server.worker_pids()
    assert server.process is not None and server.process.pid not in pids
    sessions = smtp_on_each_worker(server)
    assert sorted(sessions) == sorted(pids)
    for session in sessions.values():
        session.cmd("EHLO client.example", 250)
        session.cmd("QUIT", 221)
    log = server.log()
    assert re.search(rf"maild ready: .*; {WORKERS} workers", log), log
    assert log.count("(primary)") == 1, log  # worker 0 alone runs the once-per-tree services


def test_sigterm_stops_every_worker_and_their_sessions(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory()
    pids = server.worker_pids()
    sessions = smtp_on_each_worker(server)
    for session in sessions.values():
        session.cmd("EHLO client.example", 250)
    assert server.stop() == 0
    for session in sessions.values():
        # RFC 5321 §3.8: the server going away says 421 and closes.
        assert session.reply().code == 421, session.dump()
        assert session.closed()
    wait_gone(pids)
    log = server.log()
    for pid in pids:
        assert f"[{pid}]: maild stopped" in log, log
    assert "maild stopped: every worker has exited" in log


def test_sighup_reaches_every_worker(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory()
    pids = server.worker_pids()
    offset = len(server.log())
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    for pid in pids:
        wait_for_log(server, rf"\[{pid}\]: reload 1: configuration .* applied", offset)
    assert server.worker_pids() == pids  # a reload restarts nothing


def test_a_killed_worker_is_restarted_while_the_other_serves(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory()
    sessions = smtp_on_each_worker(server)
    victim, survivor = sorted(sessions)
    sessions[victim].sock.close()
    os.kill(victim, signal.SIGKILL)
    wait_gone([victim])
    # The listener stays bound and served throughout: the other worker takes every connection.
    for _ in range(5):
        t = smtp(server)
        t.cmd("EHLO client.example", 250)
        t.cmd("QUIT", 221)
    sessions[survivor].cmd("EHLO still.example", 250)
    replacement = wait_replaced(server, victim)
    assert sorted(server.worker_pids()) == sorted([survivor, replacement])
    assert re.search(rf"worker \d \(pid {victim}\) died \(killed by signal 9\)", server.log())
    on_each_worker(server, lambda: smtp(server), lambda t: t.sock, lambda t: t.sock.close())
    sessions[survivor].cmd("QUIT", 221)


def test_a_killed_supervisor_takes_its_workers(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory()
    pids = server.worker_pids()
    port = server.ports["smtp"]
    assert server.process is not None
    killed = server.process.pid
    run = server.data_dir / "run"
    assert (run / f"supervisor-{killed}" / "metrics").is_dir()  # the workers' metric files
    server.kill()  # returns once the workers are gone as well
    wait_gone(pids)
    assert (run / f"supervisor-{killed}").is_dir()  # SIGKILL ran no clean-up
    # Nothing holds the port any more: it binds again at once.
    probe = socket.socket()
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((server.host, port))
    finally:
        probe.close()
    server.start()
    assert len(server.worker_pids()) == WORKERS
    t = smtp(server)
    assert worker_of(server, t.sock) in server.worker_pids()
    t.cmd("QUIT", 221)
    # The dead supervisor's directory went at this start; the running one has its own.
    assert sorted(p.name for p in run.glob("supervisor-*")) == [f"supervisor-{server.process.pid}"]
