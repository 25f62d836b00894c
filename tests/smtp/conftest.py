"""SMTP test helpers: a raw-socket transcript client, a module-scoped daemon, store reads.

Most modules share one daemon (``server``) to keep the area fast, and tell their messages
apart by subject; a module that sets ``MAILD_OVERRIDES = {...}`` gets its own daemon with
that configuration. Tests that kill or restart the
daemon use the function-scoped ``maild_factory`` from tests/conftest.py instead.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from maild.store import Store
from tests.conftest import MaildServer
from tests.fixtures.wire import LineClient


class Reply:
    def __init__(self, code: int, lines: list[str]) -> None:
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __repr__(self) -> str:
        return f"Reply({self.code}, {self.lines!r})"


class Transcript(LineClient):
    """The SMTP transcript helper: multi-line replies, commands with expected codes."""

    def reply(self) -> Reply:
        lines = []
        while True:
            line = self.line()
            lines.append(line[4:].decode())
            if line[3:4] != b"-":
                return Reply(int(line[:3]), lines)

    def cmd(self, line: str | bytes, expect: int | None = None) -> Reply:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        reply = self.reply()
        if expect is not None:
            assert reply.code == expect, f"{line!r} -> {reply}; transcript:\n{self.dump()}"
        return reply

    def greeting(self) -> Reply:
        reply = self.reply()
        assert reply.code == 220, reply
        return reply

    def starttls(self) -> None:
        self.cmd("STARTTLS", 220)
        self.start_tls()

    def message(self, sender: str, rcpts: list[str], body: bytes) -> Reply:
        """MAIL, RCPT..., DATA with dot-stuffing; return the reply to the final dot."""
        self.cmd(f"MAIL FROM:<{sender}>", 250)
        for rcpt in rcpts:
            self.cmd(f"RCPT TO:<{rcpt}>", 250)
        self.cmd("DATA", 354)
        stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line
                               for line in body.split(b"\r\n"))
        self.send(stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n")
        return self.reply()



def messages(server: MaildServer, user: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every message in ``user``'s ``mailbox``, read through the store in this process
    (LMDB allows readers beside the daemon)."""
    store = Store(server.data_dir, server.config.store)
    try:
        box = store.mailbox(user, mailbox)
        assert box is not None, f"{user} has no {mailbox}"
        return [store.read(user, box.id, uid) for uid in store.uids(user, box.id)]
    finally:
        store.close()


def queue_entries(server: MaildServer) -> list[dict[str, Any]]:
    store = Store(server.data_dir, server.config.store)
    try:
        return store.queue_entries()
    finally:
        store.close()


# The daemon most modules share: the defaults, except that the per-IP message rate is
# lifted because every module's mail comes from 127.0.0.1 (test_limits.py tests the rates).
SHARED_OVERRIDES: dict[str, dict[str, Any]] = {"smtp": {"messages_per_minute_per_ip": 0},
                                                "submission": {"messages_per_minute_per_ip": 0}}


def _finish(srv: MaildServer) -> None:
    code = srv.stop()
    result = srv.fsck()
    assert code in (0, -signal.SIGKILL), srv.log()[-4000:]
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="package")
def shared_server(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path, Path],
                  password_hashes: dict[str, str]) -> Iterator[MaildServer]:
    srv = MaildServer(tmp_path_factory.mktemp("smtp-shared"), tls_files, password_hashes,
                      SHARED_OVERRIDES)
    yield srv
    _finish(srv)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           tls_files: tuple[Path, Path, Path], password_hashes: dict[str, str]) -> Iterator[MaildServer]:
    """The shared daemon, or the module's own when it sets ``MAILD_OVERRIDES``."""
    if not hasattr(request.module, "MAILD_OVERRIDES"):
        yield request.getfixturevalue("shared_server")
        return
    srv = MaildServer(tmp_path_factory.mktemp("smtp"), tls_files, password_hashes,
                      request.module.MAILD_OVERRIDES)
    yield srv
    _finish(srv)


@pytest.fixture
def mx(server: MaildServer) -> Iterator[Transcript]:
    """An EHLO'd session on the MX port."""
    t = Transcript(server.host, server.ports["smtp"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    yield t
    t.close()


@pytest.fixture
def submission(server: MaildServer) -> Iterator[Transcript]:
    """A session on 587 after STARTTLS and EHLO, not yet authenticated."""
    t = Transcript(server.host, server.ports["submission"], cafile=server.cafile)
    t.greeting()
    t.cmd("EHLO client.example", 250)
    t.starttls()
    t.cmd("EHLO client.example", 250)
    yield t
    t.close()
