"""kill -9 of one worker under SMTP load (issue 21 item 2): the supervisor restarts it, the
other worker serves on, and nothing acknowledged is lost — every message that got its 250
after DATA is in the store exactly once, read back by a real IMAP client, and `maild fsck`
is clean (the fixture checks it at the end)."""

from __future__ import annotations

import imaplib
import itertools
import os
import random
import re
import signal
import smtplib
import threading
import time
from collections.abc import Callable

from tests.conftest import USERS, MaildServer, wait_gone
from tests.workers.conftest import wait_replaced

KILLS = 3
CLIENTS = 4
CLIENT_ERRORS = (OSError, EOFError, smtplib.SMTPException)


class SmtpLoad:
    def __init__(self, server: MaildServer) -> None:
        self.server = server
        self.acked: list[str] = []
        self.attempted: set[str] = set()
        self.refusals: list[str] = []  # a live server said no: fails the test
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.ids = itertools.count()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def _client(self) -> None:
        while not self.stop.is_set():
            try:
                with smtplib.SMTP(self.server.host, self.server.ports["smtp"], timeout=10) as client:
                    while not self.stop.is_set():
                        message_id = f"load-{next(self.ids)}@workers.example"
                        with self.lock:
                            self.attempted.add(message_id)
                        body = "".join(f"line {n} of the body\r\n" for n in range(100))
                        client.sendmail("load@remote.example", ["alice@example.test"],
                                        (f"From: load@remote.example\r\nTo: alice@example.test\r\n"
                                         f"Subject: {message_id}\r\nMessage-ID: <{message_id}>\r\n\r\n"
                                         + body).encode())
                        with self.lock:
                            self.acked.append(message_id)  # 250 after DATA: stored and synced
            except smtplib.SMTPResponseException as exc:
                with self.lock:
                    self.refusals.append(f"{exc.smtp_code} {exc.smtp_error!r}")
                return
            except CLIENT_ERRORS:
                time.sleep(0.01)  # our worker died under us: connect again

    def wait_for_acks(self, more: int, timeout: float = 30.0) -> None:
        target = len(self.acked) + more
        deadline = time.monotonic() + timeout
        while len(self.acked) < target:
            assert not self.refusals, self.refusals[:5]
            assert time.monotonic() < deadline, "the load made no progress"
            time.sleep(0.005)


def stored_ids(server: MaildServer) -> list[str]:
    client = imaplib.IMAP4(server.host, server.ports["imap"], timeout=30)
    try:
        client.login("alice@example.test", USERS["alice@example.test"])
        assert client.select("INBOX", readonly=True)[0] == "OK"
        status, data = client.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert status == "OK", data
        return [re.search(rb"<([^>]+)>", item[1])[1].decode()  # type: ignore[index]
                for item in data if isinstance(item, tuple)]
    finally:
        client.logout()


def test_kill_9_of_a_worker_under_smtp_load_loses_nothing(workers_factory: Callable[..., MaildServer]) -> None:
    server = workers_factory(smtp={"messages_per_minute_per_ip": 0, "max_connections_per_ip": 100},
                             imap={"allow_plaintext_auth_on_loopback": True})
    load = SmtpLoad(server)
    rng = random.Random(21)
    for thread in load.threads:
        thread.start()
    try:
        for _ in range(KILLS):
            load.wait_for_acks(20)
            time.sleep(rng.uniform(0, 0.3))
            victim = rng.choice(server.worker_pids())
            os.kill(victim, signal.SIGKILL)
            wait_gone([victim])
            load.wait_for_acks(5)  # the surviving worker serves during the restart
            wait_replaced(server, victim)
        load.wait_for_acks(20)  # and the tree after it
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(30)
    with load.lock:
        acked = list(load.acked)
        attempted = set(load.attempted)
    stored = stored_ids(server)
    assert len(stored) == len(set(stored)), "a message was stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages lost: {sorted(missing)[:5]}"
    assert set(stored) <= attempted
    assert len(re.findall(r"died \(killed by signal 9\)", server.log())) == KILLS
    print(f"\n{KILLS} worker kills; {len(acked)} messages acknowledged, {len(stored)} stored")
