"""Outbound queue: time to deliver 1,000 messages to a remote MX.

Everything on loopback: the remote MX is an aiosmtpd server on 127.0.0.2 (in a thread of
this process, counting what it accepts); a real DNS server (tests/fixtures/dns.py,
twisted.names in a subprocess) answers ``remote.test MX 10 mx.remote.test`` and
``mx.remote.test A 127.0.0.2`` (TTL 300); a throwaway `maild serve` (bench.peers.Maild)
has ``[dns] nameservers`` and ``[outbound] port`` pointed at them, every other
``[outbound]`` key at its shipped default unless the row says otherwise. The MX offers
no STARTTLS, so delivery is in clear.

10 smtplib sessions submit (STARTTLS + AUTH PLAIN on the submission port) 100 messages
of 5 KB each to recipients at remote.test; the clock runs from the first submission
until the MX has accepted all 1,000 ("delivered s"; "submitted s" is when the last
submission got its 250). The MX must end with each message exactly once.

    python -m bench --only outbound        # through `make bench`
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.controller import Controller

from bench import load
from bench.peers import Maild, make_users
from tests.fixtures import dns

MX_ADDRESS = "127.0.0.2"
REMOTE = "remote.test"
SESSIONS = 10
MESSAGES = 1000
SIZE = 5120
SEQ = b"X-Bench-Seq: "


class Sink:
    """aiosmtpd handler: accepts everything, remembers which messages arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content
        at = content.find(SEQ)
        seq = content[at + len(SEQ):content.find(b"\r\n", at)] if at >= 0 else b"?"
        with self.lock:
            self.received.append(seq)
        return "250 2.0.0 OK: queued"

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _submit(host: str, port: int, account: load.Account, numbers: range) -> None:
    """One submission session: STARTTLS, AUTH, then a message per number."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the daemon's throwaway self-signed certificate
    with smtplib.SMTP(host, port, timeout=load.TIMEOUT) as smtp:
        smtp.starttls(context=context)
        smtp.login(account.address, account.password)
        for i in numbers:
            to = f"user{i % 10}@{REMOTE}"
            raw = load.message(i, SIZE, to=to)
            raw = SEQ + str(i).encode() + b"\r\n" + f"From: <{account.address}>\r\n".encode() + \
                raw.split(b"\r\n", 1)[1]  # load.message's first line is its From header
            smtp.sendmail(account.address, [to], raw)


def _deliver(messages: int, outbound: dict[str, Any], zone: dns.DnsZone, mx_port: int,
             sink: Sink) -> tuple[float, float]:
    """(seconds until submitted, seconds until the MX has them all)."""
    users, hashes = make_users(SESSIONS, prefix="sender")
    accounts = [load.Account(address, password) for address, password in users.items()]
    overrides = {"dns": {"nameservers": [zone.nameserver], "timeout": 2.0},
                 "outbound": {"port": mx_port, **outbound}}
    with Maild(users, hashes, submission=True, overrides=overrides) as server:
        start = time.perf_counter()
        with ThreadPoolExecutor(SESSIONS) as pool:
            futures = [pool.submit(_submit, server.host, server.ports["submission"], accounts[n],
                                   range(n, messages, SESSIONS)) for n in range(SESSIONS)]
            for future in futures:
                future.result(timeout=load.TIMEOUT)
        submitted = time.perf_counter() - start
        deadline = time.monotonic() + load.TIMEOUT
        while sink.count() < messages:
            if time.monotonic() > deadline:
                raise load.LoadError(f"the MX has {sink.count()} of {messages} after {load.TIMEOUT:.0f} s:\n"
                                     f"{server.log()}")
            time.sleep(0.01)
        delivered = time.perf_counter() - start
    expected = sorted(str(i).encode() for i in range(messages))
    if sorted(sink.received) != expected:
        raise load.LoadError(f"the MX got {len(sink.received)} messages, "
                             f"{len(set(sink.received))} distinct, of {messages}")
    return submitted, delivered


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Rows: workload, submitted s, delivered s, msgs/s (delivered)."""
    messages = 40 if quick else MESSAGES
    proc, port = dns._start()
    zone = dns.DnsZone(proc, port)
    rows: list[dict[str, Any]] = []
    try:
        zone.set(REMOTE, "MX", f"10 mx.{REMOTE}", ttl=300)
        zone.set(f"mx.{REMOTE}", "A", MX_ADDRESS, ttl=300)
        mx_port = _free_port(MX_ADDRESS)
        runs = [("[outbound] as shipped (poll_interval 1 s, max_per_domain 4)", {}),
                ("[outbound] poll_interval 0.05 s, max_per_domain 20", {"poll_interval": 0.05, "max_per_domain": 20})]
        for label, outbound in runs:
            sink = Sink()
            controller = Controller(sink, hostname=MX_ADDRESS, port=mx_port, ready_timeout=10)
            controller.start()
            try:
                submitted, delivered = _deliver(messages, outbound, zone, mx_port, sink)
            finally:
                controller.stop()
            rows.append({"workload": f"outbound queue, {messages:,} x {SIZE // 1024} KB submitted by {SESSIONS} "
                                     f"sessions to one domain, MX {MX_ADDRESS} via DNS; {label}",
                         "submitted s": submitted, "delivered s": delivered, "msgs/s": messages / delivered})
    finally:
        if proc.stdin:
            proc.stdin.close()  # the DNS server exits when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return rows
