"""Two IMAP sessions of one user on different workers see each other's changes (issue 21
item 3, "the change log is the bus"): APPEND (RFC 3501 §7.3.1 EXISTS), flags (§7.4.2 FETCH
FLAGS), EXPUNGE (§7.4.1), and IDLE (RFC 2177) is woken within a second by a change made in
the other process."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from tests.conftest import USERS, MaildServer
from tests.imap.conftest import Transcript, append, message
from tests.workers.conftest import needs_bus, on_each_worker

pytestmark = needs_bus
USER = "alice@example.test"
WAKE = 1.0  # seconds within which the other worker's session must hear of a change


def session(server: MaildServer) -> Transcript:
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    s.login(USER, USERS[USER])
    s.ok("SELECT INBOX")
    return s


@pytest.fixture
def pair(workers_factory: Callable[..., MaildServer]) -> tuple[Transcript, Transcript]:
    server = workers_factory(imap={"allow_plaintext_auth_on_loopback": True})
    sessions = on_each_worker(server, lambda: session(server), lambda s: s.sock, lambda s: s.close())
    first, second = sessions.values()
    return first, second


def noop_until(s: Transcript, wanted: bytes, timeout: float = WAKE) -> list[bytes]:
    """NOOP (RFC 3501 §6.1.2: the poll for updates) until an untagged line has ``wanted``."""
    deadline = time.monotonic() + timeout
    seen: list[bytes] = []
    while True:
        seen += s.ok("NOOP")
        if any(wanted in line for line in seen):
            return seen
        assert time.monotonic() < deadline, (wanted, seen)
        time.sleep(0.02)


def test_append_flags_and_expunge_cross_workers(pair: tuple[Transcript, Transcript]) -> None:
    a, b = pair
    uid = append(a, "INBOX", message("from worker a"))
    assert noop_until(b, b"* 1 EXISTS")
    a.ok(f"UID STORE {uid} +FLAGS (\\Flagged)")
    lines = noop_until(b, b"FETCH")
    assert any(b"* 1 FETCH" in line and b"\\Flagged" in line for line in lines), lines
    b.ok(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
    b.ok("EXPUNGE")
    assert noop_until(a, b"* 1 EXPUNGE")
    a.ok("LOGOUT")
    b.ok("LOGOUT")


def test_idle_in_one_worker_wakes_on_an_append_in_the_other(pair: tuple[Transcript, Transcript]) -> None:
    a, b = pair
    b.send("i1 IDLE")
    assert b.line().startswith(b"+ ")
    for n in range(1, 4):
        append(a, "INBOX", message(f"wake {n}"))
        appended = time.monotonic()
        b.sock.settimeout(WAKE)  # a late wake-up fails here
        while (line := b.line()) != f"* {n} EXISTS".encode():
            assert line.endswith(b" RECENT"), line
        assert time.monotonic() - appended < WAKE
    b.sock.settimeout(10)
    b.send("DONE")
    _, result = b.collect("i1")
    assert result.startswith(b"OK"), result
