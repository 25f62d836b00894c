"""Resident memory of the daemon holding 1,000 idle IMAP connections.

A throwaway `maild serve` (bench.peers.Maild) with 10 users, its [imap]
max_connections_per_ip raised above the connection count (every client is 127.0.0.1).
VmRSS of the daemon process (/proc/PID/status) is read at start ("start MB"); then 20
connections from 10 threads log in, SELECT, IDLE and log out, so code loaded on first
use and the argon2id buffers (19 MiB per verification, in each of the reactor's pool
threads, kept by malloc after use) are not counted per connection ("before MB"). Then
1,000 connections are opened from 10 threads, each logs in (user n % 10), SELECTs INBOX
(1 message) and enters IDLE (RFC 2177); once every one has its continuation, VmRSS is
read again ("after MB"), and the growth is divided by the connections.

    python -m bench --only memory        # through `make bench`
"""

from __future__ import annotations

import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import load
from bench.peers import Maild, make_users, process_tree

USERS = 10
CONNECTIONS = 1000
THREADS = 10


def rss_kb(pid: int) -> int:
    """VmRSS of one process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise load.LoadError(f"no VmRSS in /proc/{pid}/status")


def _idle_connection(host: str, port: int, account: load.Account) -> load.Imap:
    conn = load.Imap(host, port)
    try:
        conn.login(account.address, account.password)
        conn.command("SELECT INBOX")
        conn.idle()
    except BaseException:
        conn.sock.close()
        raise
    return conn


def _warm_up(host: str, port: int, account: load.Account) -> None:
    conn = load.Imap(host, port)
    conn.login(account.address, account.password)
    conn.command("SELECT INBOX")
    conn.done(conn.idle())
    conn.close()


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows: workload, RSS at start, before and after the connections (MB), growth per connection (KB)."""
    connections = 100 if quick else CONNECTIONS
    users, hashes = make_users(USERS, prefix="idle")
    accounts = [load.Account(address, password) for address, password in users.items()]
    overrides = {"imap": {"max_connections_per_ip": connections + 100,
                          "max_connections": connections + 100}}
    with Maild(users, hashes, overrides=overrides) as server:
        host, port = server.host, server.ports["imap"]
        pid = server.pid
        if pid is None:
            raise load.LoadError(f"maild exited:\n{server.log()}")
        if process_tree(pid) != [pid]:
            raise load.LoadError("maild runs child processes: VmRSS of one process would not cover them")
        with smtplib.SMTP(host, server.ports["smtp"], timeout=load.TIMEOUT) as smtp:
            for n in range(USERS):
                to = accounts[n].address
                smtp.sendmail("sender@example.org", [to], load.message(n, to=to))
        started = rss_kb(pid)
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda n: _warm_up(host, port, accounts[n % USERS]), range(2 * THREADS)))
        before = rss_kb(pid)
        conns: list[load.Imap] = []
        start = time.perf_counter()
        try:
            with ThreadPoolExecutor(THREADS) as pool:
                for conn in pool.map(lambda n: _idle_connection(host, port, accounts[n % USERS]),
                                     range(connections)):
                    conns.append(conn)
            opened = time.perf_counter() - start
            after = rss_kb(pid)
        finally:
            for conn in conns:
                conn.sock.close()
    return [{"workload": f"daemon VmRSS, {connections:,} IMAP connections logged in, SELECT INBOX, IDLE "
                         f"({USERS} users, opened from {THREADS} threads in {opened:.0f} s)",
             "start MB": started / 1024, "before MB": before / 1024, "after MB": after / 1024,
             "KB/connection": (after - before) / connections}]
