"""POP3 RETR throughput: MB/s and messages/s.

1,000 messages of 50 KB, spread over 10 users, are delivered over SMTP to a throwaway
`maild serve` (bench.peers.Maild); then 10 concurrent POP3 sessions (one per user: the
maildrop lock allows one each) log in, wait for each other, and RETR every message of
their maildrop. The clock runs from that common start to the last session's last dot.
The first pass also marks every message \\Seen (a store write per RETR); the second pass
reads the same messages again with nothing to write.

    python -m bench --only pop3        # through `make bench`
"""

from __future__ import annotations

import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import load
from bench.peers import Maild, make_users

SESSIONS = 10
MESSAGES = 1000
SIZE = 50 * 1024


def _fill(host: str, port: int, accounts: list[load.Account], messages: int) -> None:
    """Deliver message i to accounts[i % len(accounts)] over SMTP, 10 connections at a time."""

    def send(first: int) -> None:
        with smtplib.SMTP(host, port, timeout=load.TIMEOUT) as smtp:
            for i in range(first, messages, SESSIONS):
                to = accounts[i % len(accounts)].address
                smtp.sendmail("sender@example.org", [to], load.message(i, SIZE, to=to))

    with ThreadPoolExecutor(SESSIONS) as pool:
        list(pool.map(send, range(SESSIONS)))


def _retr_pass(host: str, port: int, accounts: list[load.Account]) -> tuple[float, int, int]:
    """Every session RETRs its whole maildrop; (seconds, bytes, messages) over all of them."""
    start_line = threading.Barrier(len(accounts) + 1)
    totals: list[tuple[int, int]] = []

    def session(account: load.Account) -> None:
        conn = load.Pop3(host, port)
        conn.command(f"USER {account.address}")
        conn.command(f"PASS {account.password}")
        count = int(conn.command("STAT").split()[1])
        start_line.wait(timeout=load.TIMEOUT)
        received = sum(len(conn.multiline(f"RETR {n}")) for n in range(1, count + 1))
        conn.close()  # QUIT waits for the \\Seen writes: part of the work
        totals.append((received, count))

    with ThreadPoolExecutor(len(accounts)) as pool:
        futures = [pool.submit(session, a) for a in accounts]
        start_line.wait(timeout=load.TIMEOUT)
        start = time.perf_counter()
        for future in futures:
            future.result(timeout=load.TIMEOUT)
        elapsed = time.perf_counter() - start
    return elapsed, sum(b for b, _ in totals), sum(c for _, c in totals)


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows: workload, MB/s, msgs/s."""
    messages = 200 if quick else MESSAGES
    users, hashes = make_users(SESSIONS, prefix="pop")
    accounts = [load.Account(address, password) for address, password in users.items()]
    rows: list[dict[str, Any]] = []
    with Maild(users, hashes) as server:
        _fill(server.host, server.ports["smtp"], accounts, messages)
        for label in ("first pass, marks \\Seen", "second pass"):
            elapsed, received, count = _retr_pass(server.host, server.ports["pop3"], accounts)
            if count != messages:
                raise load.LoadError(f"POP3 saw {count} of {messages} messages")
            rows.append({"workload": f"POP3 RETR, {SESSIONS} sessions, {count} x {SIZE // 1024} KB, {label}",
                         "MB/s": received / elapsed / 1e6, "msgs/s": count / elapsed})
    return rows
