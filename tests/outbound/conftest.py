"""Outbound tests: real remote MXes (aiosmtpd on loopback addresses), the real DNS test
server, and either a QueueRunner in this process on a private reactor with a controllable
clock, or a real `maild serve` (``maild_factory``) configured to use both.

Every remote MX of a test listens on the same port on its own loopback address
(127.0.0.2, 127.0.0.3, ...: all of 127.0.0.0/8 is loopback on Linux), because the
destination port is one setting, ``[outbound] port``.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from maild.config import Config, StoreConfig, from_dict
from maild.dns.resolver import Resolver
from maild.queue.runner import QueueRunner
from maild.store import Store
from tests.conftest import MaildServer, free_port
from tests.fixtures.dns import DnsZone
from tests.fixtures.reactor import ReactorThread

REMOTE = "remote.test"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    tls: bool


@dataclass
class Handler:
    """The remote server's behaviour, settable per test."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply instead of 250
    data_replies: list[str] = field(default_factory=list)  # consumed in order; then 250
    pipelining: bool = False
    ehlo: bool = True  # False: answer EHLO with 502, as a HELO-only server
    stall: bool = False  # hold the next DATA until ``release`` is set, then answer 451
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    messages: list[Received] = field(default_factory=list)
    sessions: int = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.sessions += 1
        if not self.ehlo:
            return ["502 5.5.1 EHLO not implemented"]
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.stall:
            self.stall = False
            self.stalled.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return "451 4.3.0 stalled by the test"
        reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 OK: queued"
        if reply.startswith("2"):
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.original_content, list(envelope.mail_options),
                                          session.ssl is not None))
        return reply


class RemoteMx:
    def __init__(self, address: str, port: int, tls: ssl.SSLContext | None,
                 **smtp: Any) -> None:
        self.address = address
        self.handler = Handler()
        settings = {"enable_SMTPUTF8": True, **smtp}
        self.controller = Controller(self.handler, hostname=address, port=port,
                                     tls_context=tls, require_starttls=False,
                                     decode_data=False, ready_timeout=10, **settings)
        self.controller.start()

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{self.address}: {len(self.messages)} of {count} messages"
            time.sleep(0.02)
        return self.messages

    def stop(self) -> None:
        self.handler.release.set()
        self.controller.stop()


class Remotes:
    """Start remote MXes on ``port`` at chosen loopback addresses."""

    def __init__(self, tls_files: tuple[Path, Path, Path]) -> None:
        self.port = free_port()
        self._tls_files = tls_files
        self.started: list[RemoteMx] = []

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self._tls_files[0]), str(self._tls_files[1]))
        return context

    def start(self, address: str, starttls: bool = False, **smtp: Any) -> RemoteMx:
        """An aiosmtpd server; ``smtp``: aiosmtpd.smtp.SMTP settings (data_size_limit...)."""
        mx = RemoteMx(address, self.port, self.tls_context() if starttls else None, **smtp)
        self.started.append(mx)
        return mx

    def stop(self) -> None:
        for mx in self.started:
            mx.stop()


@pytest.fixture
def remotes(tls_files: tuple[Path, Path, Path]) -> Iterator[Remotes]:
    r = Remotes(tls_files)
    yield r
    r.stop()


def mx_zone(zone: DnsZone, *hosts: tuple[int, str, str], domain: str = REMOTE) -> None:
    """MX records (preference, host name, its address) for ``domain``."""
    zone.set(domain, "MX", *[f"{pref} {name}" for pref, name, _ in hosts])
    for _, name, address in hosts:
        zone.set(name, "A", address)


class Clock:
    """A controllable clock for the runner: real time (the store stamps entries with it)
    plus whatever the test has skipped forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(scope="session")
def loop() -> Iterator[ReactorThread]:
    # The global reactor, not a private one as in tests/mailauth: TLS started with
    # ``startTLS`` schedules its writes on the global reactor (twisted.protocols.tls
    # ``_get_default_clock``), so a client doing STARTTLS on another reactor stalls.
    from twisted.internet import reactor

    running = ReactorThread(reactor, name="outbound-reactor")
    yield running
    running.stop()


@dataclass
class Outbound:
    """A QueueRunner in this process, on the private reactor, over a store in tmp."""

    store: Store
    config: Config
    runner: QueueRunner
    clock: Clock
    loop: ReactorThread

    def enqueue(self, raw: bytes, sender: str, recipients: list[str]) -> list[str]:
        return self.loop.call(self.store.enqueue, raw, sender, recipients)

    def run(self) -> None:
        """One scan of the queue at the clock's time; returns when its attempts are over."""
        self.loop.call(self.runner.run_due)

    def entries(self) -> list[dict[str, Any]]:
        return self.store.queue_entries()

    def inbox(self, user: str) -> list[bytes]:
        box = self.store.mailbox(user, "INBOX")
        assert box is not None
        return [self.store.read(user, box.id, uid) for uid in self.store.uids(user, box.id)]


@pytest.fixture
def outbound_factory(tmp_path: Path, dns_zone: DnsZone, remotes: Remotes,
                     loop: ReactorThread) -> Iterator[Callable[..., Outbound]]:
    made: list[Outbound] = []

    def make(dns_timeout: float = 2.0, **settings: Any) -> Outbound:
        config = from_dict({
            "hostname": "mx.example.test", "data_dir": str(tmp_path / "data"),
            "dns": {"nameservers": [dns_zone.nameserver], "timeout": dns_timeout},
            "outbound": {"port": remotes.port, "connect_timeout": 5.0, "command_timeout": 10.0,
                         "data_timeout": 10.0, **settings},
        }, tmp_path / "maild.toml")
        store = Store(config.data_dir, StoreConfig(shards=1, map_size_mb=256,
                                                   directory_map_size_mb=64), loop.reactor)
        store.domain_add("example.test")
        store.user_add("alice@example.test", "hash")
        clock = Clock()
        runner = QueueRunner(store, config, Resolver(config.dns, loop.reactor), loop.reactor,
                             clock=clock, rng=random.Random(7))
        out = Outbound(store, config, runner, clock, loop)
        made.append(out)
        return out

    yield make
    for out in made:
        loop.call(out.runner.stop)
        out.store.close()


@pytest.fixture
def outbound(outbound_factory: Callable[..., Outbound]) -> Outbound:
    return outbound_factory()


def message(subject: str = "Hello", body: str = "Hi,\r\n\r\nsee you.\r\n",
            to: str = f"carol@{REMOTE}") -> bytes:
    return (f"From: Alice <alice@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Thu, 01 Jan 2026 10:00:00 +0000\r\n"
            "Message-ID: <out1@example.test>\r\n\r\n" + body).encode()


def daemon(maild_factory: Callable[..., MaildServer], dns_zone: DnsZone, remotes: Remotes,
           **outbound: Any) -> MaildServer:
    """A real `maild serve` using the test DNS server and the remotes' port."""
    return maild_factory(dns={"nameservers": [dns_zone.nameserver], "timeout": 2.0},
                         outbound={"port": remotes.port, "poll_interval": 0.1,
                                   "connect_timeout": 5.0, "command_timeout": 10.0,
                                   "data_timeout": 10.0, **outbound})


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.05)
