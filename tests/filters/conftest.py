"""Fixtures of the content-filter tests: a real reactor in a background thread (the filters
are Twisted code), a real store, and Transactions as the SMTP server builds them.

The real engines (``clamd``, ``rspamd``) and the DNS server come from tests/fixtures,
registered by tests/conftest.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.config import StoreConfig
from maild.store import Store
from maild.util.authresults import AuthResults, DkimResult, DmarcResult, SpfResult
from maild.util.transaction import Transaction
from tests.fixtures.reactor import ReactorThread


@pytest.fixture(scope="session")
def reactor_thread() -> Iterator[ReactorThread]:
    running = ReactorThread(name="filters-reactor")
    yield running
    running.stop()


@pytest.fixture
def store(tmp_path: Path, reactor_thread: ReactorThread) -> Iterator[Store]:
    """A real store with example.test, alice@ and bob@, whose Deferreds fire on the reactor."""
    config = StoreConfig(shards=1, map_size_mb=256, directory_map_size_mb=64)
    opened = Store(tmp_path / "data", config, reactor_thread.reactor)
    opened.domain_add("example.test")
    for user in ("alice@example.test", "bob@example.test"):
        opened.user_add(user, "not-a-password-hash")
    yield opened
    opened.close()


def make_tx(raw: bytes, *, mail_from: str = "sender@remote.test",
            rcpt_to: tuple[str, ...] = ("alice@example.test",), client_ip: str = "192.0.2.10",
            authenticated_user: str | None = None, **notes: Any) -> Transaction:
    """A Transaction at end of DATA, as the SMTP server hands it to the chain."""
    return Transaction(client_ip=client_ip, client_port=40000,
                       submission=authenticated_user is not None, helo="mail.remote.test",
                       authenticated_user=authenticated_user, mail_from=mail_from,
                       rcpt_to=list(rcpt_to), raw=raw, notes=dict(notes))


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def auth_results(spf: str | None = None, dkim: tuple[str, ...] = (),
                 dmarc: str | None = None) -> AuthResults:
    """What mail authentication leaves in ``notes["auth_results"]``, for sender remote.test."""
    return AuthResults(
        spf=SpfResult(spf, "mailfrom", "remote.test", "sender@remote.test") if spf else None,
        dkim=[DkimResult(r, "remote.test", f"s{i}", "rsa-sha256") for i, r in enumerate(dkim)],
        dmarc=DmarcResult(dmarc, "remote.test") if dmarc else None)
