"""The POP3 autologout timer (RFC 1939 §3) on the reactor's clock: a session driven in
process over a StringTransport, its ServerContext's reactor a ``Clock`` the test advances,
so the timing is exact and nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from maild import config as configmod
from maild.auth import Authenticator
from maild.context import ServerContext
from maild.delivery import Delivery
from maild.filters.chain import FilterChain
from maild.pop3.server import Pop3Factory, Pop3Session
from maild.store import Store

IDLE = 600.0  # RFC 1939 §3: at least 10 minutes


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ctx(tmp_path: Path, clock: Clock) -> Iterator[ServerContext]:
    cfg = configmod.from_dict({"hostname": "mx.example.test", "data_dir": str(tmp_path / "data"),
                               "pop3": {"idle_timeout": IDLE},
                               "store": {"shards": 1, "map_size_mb": 64, "directory_map_size_mb": 16}},
                              tmp_path / "maild.toml")
    store = Store(cfg.data_dir, cfg.store)
    yield ServerContext(config=cfg, store=store, auth=Authenticator(store, cfg.auth, clock), tls=None,
                        reactor=clock, filters=FilterChain([]), delivery=Delivery(store, cfg))
    store.close()


def connect(ctx: ServerContext) -> tuple[Pop3Session, StringTransport]:
    session = Pop3Factory(ctx, implicit_tls=False).buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 40000))
    session.makeConnection(transport)
    assert transport.value().startswith(b"+OK mx.example.test")
    transport.clear()
    return session, transport


def test_silence_for_the_idle_timeout_closes_the_session(ctx: ServerContext, clock: Clock) -> None:
    _, transport = connect(ctx)
    clock.advance(IDLE - 0.001)
    assert not transport.disconnecting and transport.value() == b""
    clock.advance(0.001)
    assert transport.value() == b"-ERR Disconnected for inactivity\r\n"
    assert transport.disconnecting


def test_each_command_restarts_the_timer(ctx: ServerContext, clock: Clock) -> None:
    session, transport = connect(ctx)
    for _ in range(4):
        clock.advance(IDLE * 0.9)
        session.dataReceived(b"CAPA\r\n")
        assert transport.value().startswith(b"+OK") and not transport.disconnecting
        transport.clear()
    clock.advance(IDLE * 0.9)  # 3.6 idle timeouts since the greeting, 0.9 since the last command
    assert not transport.disconnecting
    clock.advance(IDLE * 0.1)
    assert transport.disconnecting


def test_only_whole_lines_restart_the_timer(ctx: ServerContext, clock: Clock) -> None:
    """A client sending a byte now and then, never ending its line, still times out."""
    session, transport = connect(ctx)
    for byte in b"CAPA":
        clock.advance(IDLE / 5)
        session.dataReceived(bytes([byte]))
    clock.advance(IDLE / 5)
    assert transport.value() == b"-ERR Disconnected for inactivity\r\n" and transport.disconnecting
