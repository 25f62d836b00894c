"""The outbound queue with two workers (maild/queue/runner.py, issue 21 item 4): both run
the queue, polling the same due entries, and each entry is attempted by one worker at a
time (its lease in the store), so a remote MX gets every message exactly once — submitted
through either worker — and both workers deliver."""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Callable

from tests.conftest import MaildServer
from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Remotes, daemon, message, mx_zone, wait_until
from tests.workers.conftest import WORKERS, on_each_worker

MESSAGES = 30


def test_each_entry_delivered_once_by_either_worker(workers_factory: Callable[..., MaildServer],
                                                    dns_zone: DnsZone, remotes: Remotes) -> None:
    server = daemon(workers_factory, dns_zone, remotes)
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    context = ssl.create_default_context(cafile=str(server.cafile))

    def connect() -> smtplib.SMTP:
        smtp = smtplib.SMTP(server.host, server.ports["submission"], timeout=30)
        smtp.starttls(context=context)
        smtp.login("alice@example.test", "alice-secret")
        return smtp
    sessions = list(on_each_worker(server, connect, lambda s: s.sock, lambda s: s.quit()).values())
    for n in range(MESSAGES):  # through both workers in turn
        sessions[n % WORKERS].sendmail("alice@example.test", [f"carol@{REMOTE}"], message(subject=f"lease {n}"))
    for smtp in sessions:
        smtp.quit()
    got = mx.wait_for(MESSAGES)
    time.sleep(1.0)  # a second delivery of any of them would arrive by now (poll_interval 0.1 s)
    subjects = [re.search(rb"^Subject: (.*)\r$", m.content, re.M)[1] for m in mx.messages]  # type: ignore[index]
    assert sorted(subjects) == sorted(f"lease {n}".encode() for n in range(MESSAGES)), subjects
    assert len(got) == MESSAGES
    delivering = set(re.findall(r"\[(\d+)\]: queue \S+: <carol@[^>]+> delivered", server.log()))
    assert len(delivering) == WORKERS, delivering  # every worker runs the queue
    store = server.store()
    try:
        wait_until(lambda: not store.queue_entries(), what="empty queue")
    finally:
        store.close()
