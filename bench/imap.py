"""IMAP: logins/s, APPEND/s, and the read paths of a large mailbox.

A throwaway `maild serve` (bench.peers.Maild) with 10 users. 10 clients log in and out
(logins/s, argon2id included), then APPEND 4 KB messages (appends/s, each acknowledged
after fsync); one user's INBOX is filled with ``messages`` messages and a single
connection times SELECT, FETCH 1:* (UID FLAGS), FETCH of 500 ENVELOPEs and SEARCH FROM /
SUBJECT / BODY / UNSEEN on it (each run three times, the median reported; "hits" is the
number of messages found). Last, the concurrent mixed workload (bench.load.imap_mixed: 10
clients of one user on four shared mailboxes) with ``[server] workers`` = 1 and = the cores.

    python -m bench --only imap                     # through `make bench`
    python -c "import bench.imap as b; print(b.run(messages=100_000))"   # the 100k mailbox
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench import load
from bench.peers import Maild, make_users

CLIENTS = 10
MESSAGES = 100_000  # the large mailbox; --quick uses 2,000


def _median_ms(conn: load.Imap, command: str, runs: int = 3) -> tuple[float, bytes]:
    """Median milliseconds of ``command`` over ``runs`` runs, and the last response."""
    times = []
    response = b""
    for _ in range(runs):
        elapsed, response = load.timed(conn, command)
        times.append(elapsed * 1000)
    return statistics.median(times), response


def _hits(response: bytes) -> int:
    """Messages named by the ``* SEARCH`` lines of a response."""
    return sum(len(line.split()) - 2 for line in response.split(b"\r\n") if line.startswith(b"* SEARCH"))


def run(quick: bool = False, messages: int | None = None) -> list[dict[str, Any]]:
    """Rows: workload and figure. ``messages`` sizes the large mailbox (default 100,000;
    2,000 with ``quick``)."""
    count = messages or (2_000 if quick else MESSAGES)
    users, hashes = make_users(CLIENTS, prefix="imap")
    accounts = [load.Account(address, password) for address, password in users.items()]
    corpus = [load.message(i) for i in range(1000)]
    rows: list[dict[str, Any]] = []
    with Maild(users, hashes) as server:
        host, port = server.host, server.ports["imap"]
        logins = 100 if quick else 300
        rate = load.imap_logins(host, port, accounts, clients=CLIENTS, total=logins)
        rows.append({"workload": f"LOGIN+LOGOUT, {CLIENTS} clients, {logins} logins", "logins/s": rate})
        appends = 500 if quick else 2_000
        rate = load.imap_append(host, port, accounts[1:], corpus, clients=CLIENTS, total=appends)
        rows.append({"workload": f"APPEND 4 KB, {CLIENTS} clients, 9 mailboxes, {appends} messages",
                     "appends/s": rate})
        rate = load.imap_append(host, port, accounts[:1], corpus, clients=CLIENTS, total=count)
        rows.append({"workload": f"APPEND 4 KB, {CLIENTS} clients, one mailbox, {count:,} messages",
                     "appends/s": rate})
        conn = load.Imap(host, port)
        try:
            conn.login(accounts[0].address, accounts[0].password)
            reads = [
                ("SELECT INBOX", "SELECT INBOX"),
                ("FETCH 1:* (UID FLAGS)", "FETCH 1:* (UID FLAGS)"),
                ("FETCH 500 ENVELOPE", "FETCH 1:500 ENVELOPE"),
                ("SEARCH FROM", f'SEARCH FROM "{load.search_from()}"'),
                ("SEARCH SUBJECT", f'SEARCH SUBJECT "{load.search_subject()}"'),
                ("SEARCH BODY", f'SEARCH BODY "{load.search_body()}"'),
                ("UID SEARCH UNSEEN", "UID SEARCH UNSEEN"),
            ]
            for label, command in reads:
                ms, response = _median_ms(conn, command)
                row = {"workload": f"{label}, {count:,} messages", "ms": ms, "response KB": len(response) / 1024}
                if "SEARCH" in command:
                    row["hits"] = _hits(response)
                rows.append(row)
        finally:
            conn.close()
    rows.extend(mixed(users, hashes, accounts[1], seconds=8.0 if quick else 20.0))
    return rows


def mixed(users: dict[str, str], hashes: dict[str, str], account: load.Account,
          seconds: float) -> list[dict[str, Any]]:
    """Commands/s of the concurrent mixed workload with one process and one worker per core."""
    rows: list[dict[str, Any]] = []
    cores = len(os.sched_getaffinity(0))
    for workers in sorted({1, cores}):
        with Maild(users, hashes, overrides={"server": {"workers": workers}}) as server:
            load.imap_mixed_setup(server.host, server.ports["imap"], account, clients=CLIENTS)
            rate = load.imap_mixed(server.host, server.ports["imap"], account, clients=CLIENTS, seconds=seconds)
        rows.append({"workload": f"concurrent mixed, {CLIENTS} clients, shared mailboxes, {seconds:.0f} s, "
                                 f"workers = {workers}", "commands/s": rate})
    return rows
