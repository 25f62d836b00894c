"""maild.util.reactor: Twisted's epoll reactor without the per-event log context. Every
ready descriptor of a poll is dispatched as Twisted would, and one whose handling blows up
is logged without keeping the others of that poll from their turn. Real sockets."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone

from maild.util.reactor import Reactor


class _Reader:
    """A socket the reactor reads; ``lost`` raises from connectionLost when set."""

    def __init__(self, sock: socket.socket, *, lose: bool = False) -> None:
        self.sock = sock
        self.lose = lose
        self.read: list[bytes] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "test"

    def doRead(self) -> Any:
        self.read.append(self.sock.recv(100))
        return ConnectionDone() if self.lose else None

    def connectionLost(self, reason: Any) -> None:
        raise RuntimeError("a buggy connectionLost")


@pytest.fixture
def reactor() -> Any:
    r = Reactor()
    yield r
    r._poller.close()


def test_every_ready_descriptor_of_a_poll_is_read(reactor: Any, caplog: Any) -> None:
    pairs = [socket.socketpair() for _ in range(3)]
    readers = [_Reader(b, lose=(n == 0)) for n, (_, b) in enumerate(pairs)]
    for reader in readers:
        reactor.addReader(reader)
    for n, (a, _) in enumerate(pairs):
        a.send(b"hello %d" % n)
    with caplog.at_level(logging.ERROR, logger="maild.reactor"):
        reactor.doPoll(1.0)
    assert [r.read for r in readers] == [[b"hello 0"], [b"hello 1"], [b"hello 2"]]
    assert "failed" in caplog.text  # reader 0's connectionLost raised: logged, the poll went on
    for a, b in pairs:
        a.close()
        b.close()


def test_installed_before_the_daemon_imports_the_reactor() -> None:
    """``maild serve`` installs it first (maild/cli.py); the daemon's modules then get it."""
    code = ("import sys; from maild.util import reactor; assert reactor.install(); "
            "import maild.supervisor; from twisted.internet import reactor as r; "
            "print(type(r).__module__ + '.' + type(r).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "maild.util.reactor.Reactor"


def test_a_second_stop_signal_while_stopping_changes_nothing() -> None:
    """Ctrl-C of `make run` reaches every worker as SIGINT and the supervisor forwards a
    SIGTERM too: the reactor stops once, and the second signal is no CRITICAL traceback."""
    code = textwrap.dedent("""
        import logging, os, signal, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from maild.util import reactor as r
        r.install()
        from twisted.internet import reactor
        def both():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        reactor.callWhenRunning(both)
        reactor.callLater(10, os._exit, 3)  # the stop never came
        reactor.run()
        print("stopped")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "stopped", out.stderr
    assert "ReactorNotRunning" not in out.stderr and "CRITICAL" not in out.stderr, out.stderr
    assert "SIGTERM while stopping already" in out.stderr, out.stderr
