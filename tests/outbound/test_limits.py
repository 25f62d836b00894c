"""Concurrency limits, reply timeouts and misbehaving servers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.fixtures.dns import DnsZone
from tests.outbound.conftest import REMOTE, Outbound, Remotes, message, mx_zone


def test_per_domain_limit(outbound_factory: Callable[..., Outbound], remotes: Remotes,
                          dns_zone: DnsZone) -> None:
    out = outbound_factory(max_per_domain=2)
    mx = remotes.start("127.0.0.2")
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    for i in range(5):
        out.enqueue(message(subject=f"m{i}"), "alice@example.test", [f"r{i}@{REMOTE}"])
    out.run()  # one scan starts at most two deliveries to remote.test
    assert len(mx.messages) == 2 and len(out.entries()) == 3
    out.run()
    out.run()
    assert len(mx.messages) == 5 and out.entries() == []


def test_overall_limit(outbound_factory: Callable[..., Outbound], remotes: Remotes,
                       dns_zone: DnsZone) -> None:
    out = outbound_factory(max_connections=3)
    mx = remotes.start("127.0.0.2")
    for d in ("one.test", "two.test", "three.test", "four.test"):
        mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"), domain=d)
        out.enqueue(message(), "alice@example.test", [f"x@{d}"])
    out.run()
    assert len(mx.messages) == 3
    out.run()
    assert len(mx.messages) == 4


class RawServer:
    """A TCP server that sends ``greeting`` (maybe nothing) and then only listens."""

    def __init__(self, address: str, port: int, greeting: bytes) -> None:
        self.sock = socket.create_server((address, port))
        self.greeting = greeting
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            conn.sendall(self.greeting)

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


@pytest.fixture
def raw_server(remotes: Remotes) -> Iterator[Callable[[bytes], RawServer]]:
    made: list[RawServer] = []

    def make(greeting: bytes) -> RawServer:
        made.append(RawServer("127.0.0.2", remotes.port, greeting))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.mark.parametrize(("greeting", "error"), [
    (b"", "451 4.4.2 greeting: no reply within 0.5s"),
    (b"220 hi\r\n", "451 4.4.2 EHLO: no reply within 0.5s"),
    (b"hello there\r\n", "451 4.4.2 greeting: protocol error: not a reply line: 'hello there'"),
    (b"554 5.7.1 go away\r\n", "554 5.7.1 go away"),
])
def test_misbehaving_server_is_a_failed_attempt(outbound_factory: Callable[..., Outbound],
                                                raw_server: Callable[[bytes], RawServer],
                                                dns_zone: DnsZone, greeting: bytes,
                                                error: str) -> None:
    out = outbound_factory(command_timeout=0.5)
    raw_server(greeting)
    mx_zone(dns_zone, (10, "mx1.remote.test", "127.0.0.2"))
    out.enqueue(message(), "alice@example.test", [f"carol@{REMOTE}"])
    out.run()
    entries = out.entries()
    if error.startswith("5"):  # a 554 greeting at the only MX: no service, bounced
        assert entries == [] and len(out.inbox("alice@example.test")) == 1
    else:
        assert [e["last_error"] for e in entries] == [error]
