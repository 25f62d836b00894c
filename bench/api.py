"""The HTTP API: a page of a large folder, the send rate, and 1,000 WebSocket clients.

A throwaway `maild serve` (bench.peers.Maild) with the API on loopback:

- one user's INBOX is filled with ``messages`` messages over IMAP APPEND; then
  ``GET /v1/folders/{id}/messages?limit=50`` (the newest 50) and the page after it are
  timed 50 times each (p50 and p99, one keep-alive connection);
- ``POST /v1/messages`` from 10 clients, each message to a local user (the submission
  path: stored in the recipient's INBOX and the sender's Sent before the 202): sends/s;
- 1,000 WebSocket clients on ``GET /v1/events`` (100 users, 10 sockets each): the
  daemon's RSS before and after they connect, then 200 messages delivered over SMTP one
  at a time to those users, and the latency from each SMTP 250 to each socket's event
  (p50, p99 over the 2,000 events).

    python -m bench --only api        # through `make bench`
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import smtplib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import load
from bench.peers import Maild, make_users
from tests.api.wsclient import WebSocket
from tests.fixtures.ports import free_port

MESSAGES = 100_000
SOCKETS = 1000
SOCKET_USERS = 100


def _rss_mb(pid: int) -> float:
    """The resident memory of ``pid`` and its descendants (a supervisor and its workers)."""
    total = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            children = [int(c) for c in fh.read().split()]
    except OSError:
        children = []
    for child in children:
        try:
            total += _rss_mb(child)
        except OSError:
            continue  # gone meanwhile
    return total


class _Client:
    def __init__(self, port: int, token: str = "") -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=load.TIMEOUT)
        self.token = token

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        if resp.status >= 300:
            raise load.LoadError(f"{method} {path}: {resp.status} {payload[:200]!r}")
        return json.loads(payload)


def _token(port: int, address: str, password: str) -> str:
    basic = base64.b64encode(f"{address}:{password}".encode()).decode()
    client = _Client(port)
    return str(client.call("POST", "/v1/tokens", {"name": "bench"}, {"Authorization": f"Basic {basic}"})["token"])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _page_rows(port: int, token: str, count: int) -> list[dict[str, Any]]:
    client = _Client(port, token)
    inbox = next(f for f in client.call("GET", "/v1/folders")["folders"] if f["name"] == "INBOX")
    rows = []
    first = client.call("GET", f"/v1/folders/{inbox['id']}/messages?limit=50")
    for label, path in (("newest 50", f"/v1/folders/{inbox['id']}/messages?limit=50"),
                        ("the next 50 (cursor)",
                         f"/v1/folders/{inbox['id']}/messages?limit=50&cursor={first['next_cursor']}")):
        times = []
        for _ in range(50):
            started = time.perf_counter()
            page = client.call("GET", path)
            times.append((time.perf_counter() - started) * 1000)
            if len(page["messages"]) != 50:
                raise load.LoadError(f"a page of {len(page['messages'])} messages")
        rows.append({"workload": f"GET messages, {label}, of {count:,} messages",
                     "p50 ms": statistics.median(times), "p99 ms": _percentile(times, 0.99)})
    return rows


def _send_rate(port: int, tokens: list[str], recipients: list[str], total: int) -> float:
    def worker(n: int) -> None:
        client = _Client(port, tokens[n % len(tokens)])
        for i in range(n, total, 10):
            client.call("POST", "/v1/messages", {"to": [recipients[i % len(recipients)]], "subject": f"bench {i}",
                                                 "text": "x" * 3000})
    started = time.perf_counter()
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(worker, range(10)))
    return total / (time.perf_counter() - started)


def _sockets_rows(server: Maild, port: int, users: dict[str, str], messages: int) -> list[dict[str, Any]]:
    addresses = list(users)[:SOCKET_USERS]
    tokens = {a: _token(port, a, users[a]) for a in addresses}
    before = _rss_mb(server.process.pid)  # type: ignore[union-attr]
    sockets: list[tuple[WebSocket, str]] = []
    for n in range(SOCKETS):
        address = addresses[n % len(addresses)]
        ws = WebSocket("127.0.0.1", port, "/v1/events", tokens[address], timeout=load.TIMEOUT)
        if ws.status != 101:
            raise load.LoadError(f"WebSocket refused: {ws.head[:200]}")
        ws.receive()  # ready
        sockets.append((ws, address))
    time.sleep(1.0)
    after = _rss_mb(server.process.pid)  # type: ignore[union-attr]
    sent: dict[str, list[float]] = {a: [] for a in addresses}
    arrivals: list[tuple[str, int, float]] = []  # (user, its k-th message, when its event came)
    seen: dict[int, int] = {}
    done = threading.Event()
    by_fd = {ws.sock.fileno(): (ws, address) for ws, address in sockets}
    expected = messages * SOCKETS // len(addresses)

    def reader() -> None:
        while len(arrivals) < expected and not done.is_set():
            readable, _, _ = select.select(list(by_fd), [], [], 1.0)
            for fd in readable:
                ws, address = by_fd[fd]
                while True:
                    event = ws.receive()
                    if event.get("type") == "message.new":
                        k = seen.get(fd, 0)
                        seen[fd] = k + 1
                        arrivals.append((address, k, time.perf_counter()))
                    if not ws.buffer:
                        break
    thread = threading.Thread(target=reader)
    thread.start()
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=load.TIMEOUT) as smtp:
        smtp.ehlo()
        for i in range(messages):
            to = addresses[i % len(addresses)]
            raw = load.message(i, 2048, to=to)
            smtp.mail("sender@example.org")
            smtp.rcpt(to)
            code, _ = smtp.data(raw)
            sent[to].append(time.perf_counter())  # the 250 arrived
            if code != 250:
                raise load.LoadError(f"SMTP {code}")
            time.sleep(0.005)
    thread.join(60)
    done.set()
    for ws, _ in sockets:
        ws.close()
    if len(arrivals) != expected:
        raise load.LoadError(f"{len(arrivals)} of {expected} events arrived")
    # An event may even come before the client has read the 250: that counts as 0.
    latencies = [max(0.0, when - sent[address][k]) for address, k, when in arrivals]
    return [{"workload": f"{SOCKETS:,} WebSocket clients ({SOCKET_USERS} users), daemon RSS",
             "MB before": before, "MB after": after, "KB per socket": (after - before) * 1024 / SOCKETS},
            # (the daemon: the supervisor and its worker processes together)
            {"workload": f"SMTP 250 -> WebSocket event, {messages} messages, {len(latencies):,} events",
             "p50 ms": statistics.median(latencies) * 1000, "p99 ms": _percentile(latencies, 0.99) * 1000}]


def run(quick: bool = False, messages: int | None = None) -> list[dict[str, Any]]:
    """Rows: workload and figures. ``messages`` sizes the large folder (default 100,000;
    2,000 with ``quick``)."""
    count = messages or (2_000 if quick else MESSAGES)
    users, hashes = make_users(SOCKET_USERS, prefix="api")
    accounts = [load.Account(address, password) for address, password in users.items()]
    port = free_port()
    overrides: dict[str, dict[str, Any]] = {"api": {"listen": [f"127.0.0.1:{port}"], "requests_per_minute_per_ip": 0,
                         "requests_per_minute_per_token": 0,
                         "max_connections_per_ip": SOCKETS + 100},
                 "submission": {"messages_per_minute_per_user": 0}}
    rows: list[dict[str, Any]] = []
    corpus = [load.message(i) for i in range(1000)]
    with Maild(users, hashes, overrides=overrides) as server:
        load.imap_append(server.host, server.ports["imap"], accounts[:1], corpus, clients=10, total=count)
        first = accounts[0]
        token = _token(port, first.address, first.password)
        rows.extend(_page_rows(port, token, count))
        sends = 200 if quick else 1000
        senders = [_token(port, a.address, a.password) for a in accounts[1:11]]
        rate = _send_rate(port, senders, [a.address for a in accounts[11:21]], sends)
        rows.append({"workload": f"POST /v1/messages, 10 clients, {sends} x 3 KB to local users", "sends/s": rate})
        rows.extend(_sockets_rows(server, port, users, 50 if quick else 200))
    return rows
