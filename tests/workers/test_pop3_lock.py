"""The POP3 maildrop lock across workers (RFC 1939 §8: one session per maildrop; RFC 2449
§8.1.1 -ERR [IN-USE]): a session in one worker locks the maildrop for sessions in every
worker, QUIT frees it for all, and so does the death (kill -9) of the worker holding it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from tests.conftest import USERS, MaildServer, wait_gone
from tests.pop3.conftest import Account, Pop3Transcript
from tests.workers.conftest import on_each_worker

ALICE = Account("alice@example.test", USERS["alice@example.test"])


def greeted(server: MaildServer) -> Pop3Transcript:
    t = Pop3Transcript(server.host, server.ports["pop3"])
    t.greeting()
    return t


def in_use(t: Pop3Transcript) -> bool:
    t.cmd(f"USER {ALICE.address}", ok=True)
    answer = t.cmd(f"PASS {ALICE.password}")
    assert answer.startswith(("+OK", "-ERR [IN-USE]")), answer
    return answer.startswith("-ERR")


def test_lock_across_workers(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory(pop3={"allow_plaintext_auth_on_loopback": True})
    sessions = on_each_worker(server, lambda: greeted(server), lambda t: t.sock, lambda t: t.close())
    (first_pid, first), (_, second) = sessions.items()
    first.login(ALICE)
    assert in_use(second), "a second worker let a second session into a locked maildrop"
    first.cmd("QUIT", ok=True)
    deadline = time.monotonic() + 5
    while in_use(second):  # still AUTHORIZATION: the same connection may try again
        assert time.monotonic() < deadline, "QUIT in one worker did not free the lock for the other"
        time.sleep(0.05)
    # The holder's worker is killed: its lock goes with it.
    third = on_each_worker(server, lambda: greeted(server), lambda t: t.sock, lambda t: t.close())[first_pid]
    second.cmd("QUIT", ok=True)
    third.login(ALICE)
    os.kill(first_pid, signal.SIGKILL)
    wait_gone([first_pid])
    deadline = time.monotonic() + 10
    while True:
        t = greeted(server)
        if not in_use(t):
            t.cmd("QUIT", ok=True)
            break
        t.close()
        assert time.monotonic() < deadline, "the lock of a killed worker's session stayed"
        time.sleep(0.1)
