"""Helpers for the tests of the process model ([server] workers, maild/supervisor.py): a
daemon with two worker processes, which worker holds a given client connection (read from
/proc, nothing in the protocols), and sessions spread over every worker.

Every test here runs a real supervisor with WORKERS workers on loopback ports; clients
connect to the one shared listener and the kernel hands each connection to whichever worker
accepts it first, so a test that needs a session on each worker connects until it has one.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from maild.store import Store
from tests.conftest import MaildServer
from tests.test_sd_notify import notify_socket  # noqa: F401 (the fixture, for test_notify)

WORKERS = 2
T = TypeVar("T")

# Sessions of different workers see each other's changes through the store's change log
# (FOLLOW_API.md); until it is in the store, they do not.
needs_bus = pytest.mark.skipif(not hasattr(Store, "follow"),
                               reason="the store's change-log follow API has not landed")


@pytest.fixture
def workers_factory(maild_factory: Callable[..., MaildServer]) -> Callable[..., MaildServer]:
    """maild_factory with ``[server] workers = WORKERS`` (more ``server`` keys may be given)."""
    def make(**overrides: dict[str, object]) -> MaildServer:
        overrides["server"] = {"workers": WORKERS, **overrides.get("server", {})}
        server = maild_factory(**overrides)
        assert len(server.worker_pids()) == WORKERS, server.log()
        return server
    return make


def _hex_endpoint(host: str, port: int) -> str:
    """An IPv4 endpoint as /proc/net/tcp writes it (address little-endian, port big-endian)."""
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


def worker_of(server: MaildServer, sock: socket.socket, timeout: float = 5.0) -> int:
    """The pid of the worker holding the server side of the client connection ``sock``."""
    client = _hex_endpoint(*sock.getsockname()[:2])
    listener = _hex_endpoint(*sock.getpeername()[:2])
    deadline = time.monotonic() + timeout
    while True:
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == listener and fields[2] == client:
                inode = fields[9]
        if inode is not None:
            for pid in server.worker_pids():
                try:
                    links = [p.readlink() for p in Path(f"/proc/{pid}/fd").iterdir()]
                except OSError:
                    continue  # gone, or a descriptor closed while we looked
                if Path(f"socket:[{inode}]") in links:
                    return pid
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker holds the connection from {sock.getsockname()}")
        time.sleep(0.01)  # not accepted yet


def on_each_worker(server: MaildServer, connect: Callable[[], T], sock_of: Callable[[T], socket.socket],
                   close: Callable[[T], object], attempts: int = 60) -> dict[int, T]:
    """One session per worker pid, made by ``connect``; the extra sessions are closed."""
    found: dict[int, T] = {}
    for _ in range(attempts):
        session = connect()
        pid = worker_of(server, sock_of(session))
        if pid in found:
            close(session)
        else:
            found[pid] = session
        if len(found) == WORKERS:
            return found
    for session in found.values():
        close(session)
    raise AssertionError(f"{attempts} connections all landed on workers {sorted(found)}")


def wait_for_log(server: MaildServer, pattern: str, after: int = 0, timeout: float = 30.0) -> re.Match[str]:
    """The first match of ``pattern`` in the daemon's log past offset ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, server.log()[after:])
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in the log:\n{server.log()[after:][-3000:]}")
        time.sleep(0.02)


def wait_replaced(server: MaildServer, dead: int, timeout: float = 30.0) -> int:
    """The pid of the worker that replaced ``dead``, once it says it is ready."""
    deadline = time.monotonic() + timeout
    while True:
        pids = server.worker_pids()
        new = [p for p in pids if p != dead]
        if len(pids) == WORKERS and dead not in pids:
            fresh = [p for p in new if re.search(rf"\[{p}\]: worker \d+ of \d+ ready", server.log())]
            if len(fresh) == WORKERS:
                return max(new, key=lambda p: server.log().find(f"[{p}]: worker"))
        if time.monotonic() > deadline:
            raise AssertionError(f"worker {dead} was not replaced:\n{server.log()[-3000:]}")
        time.sleep(0.02)

