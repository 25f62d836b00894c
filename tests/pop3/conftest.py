"""POP3 test helpers: a raw-socket transcript client, a module-scoped daemon with a pool of
fresh accounts, mail put in through the daemon's SMTP listener, store reads.

Modules share daemons (``server``) to keep the area fast: one per distinct
``MAILD_OVERRIDES = {...}`` a module sets for its own configuration. Each test takes an
untouched mailbox from the ``account`` fixture, so tests never see each other's mail. Tests that
kill or restart the daemon use the function-scoped ``maild_factory`` instead.
"""

from __future__ import annotations

import base64
import poplib
import signal
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from maild.auth import hash_password
from maild.store import Store
from tests.conftest import MaildServer
from tests.fixtures.wire import LineClient

POOL_PASSWORD = "pop3-pool-secret"
POOL_SIZE = 200


@dataclass(frozen=True)
class Account:
    address: str
    password: str


class Pop3Transcript(LineClient):
    """The POP3 transcript helper: status lines, byte-unstuffed multi-line responses."""

    def status(self, ok: bool | None = None) -> str:
        """The next status line; ``ok`` asserts +OK (True) or -ERR (False)."""
        text = self.line().decode()
        if ok is not None:
            expected = "+OK" if ok else "-ERR"
            assert text.split(" ", 1)[0] == expected, f"expected {expected}, got {text!r}:\n{self.dump()}"
        return text

    def cmd(self, line: str | bytes, ok: bool | None = None) -> str:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.status(ok)

    def body(self) -> list[bytes]:
        """The rest of a multi-line response, byte-unstuffed (RFC 1939 §3)."""
        data, scanned = bytearray(self._buf), 0
        while True:
            if data[:3] == b".\r\n":
                end = 0
                break
            at = data.find(b"\r\n.\r\n", max(0, scanned - 4))
            if at >= 0:
                end = at + 2
                break
            scanned = len(data)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError(f"connection closed in a multi-line response:\n{self.dump()}")
            data += chunk
        body, self._buf = bytes(data[:end]), bytes(data[end + 3:])
        self.log.append(f"S: <{len(body)} octets> .")
        return [line[1:] if line.startswith(b".") else line for line in body.split(b"\r\n")[:-1]]

    def multi(self, line: str) -> tuple[str, list[bytes]]:
        first = self.cmd(line, ok=True)
        return first, self.body()

    def greeting(self) -> str:
        return self.status(ok=True)

    def stls(self) -> None:
        self.cmd("STLS", ok=True)
        self.start_tls()

    def login(self, account: Account) -> str:
        self.cmd(f"USER {account.address}", ok=True)
        return self.cmd(f"PASS {account.password}", ok=True)



def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def deliver(server: MaildServer, rcpt: str, raw: bytes, sender: str = "sender@remote.example") -> None:
    """Put one message into ``rcpt``'s INBOX through the daemon's MX listener."""
    with smtplib.SMTP(server.host, server.ports["smtp"], timeout=30) as smtp:
        smtp.sendmail(sender, [rcpt], raw)


def message(n: int, body: bytes = b"") -> bytes:
    return (f"From: sender@remote.example\r\nTo: someone@example.test\r\nSubject: message {n}\r\n"
            f"Message-ID: <m{n}@remote.example>\r\n\r\n").encode() + (body or f"body of {n}\r\n".encode())


def stored(server: MaildServer, user: str, mailbox: str = "INBOX") -> dict[int, tuple[frozenset[str], bytes]]:
    """uid -> (flags, raw) of every message in ``user``'s mailbox, read through the store
    in this process (LMDB allows readers beside the daemon)."""
    store = Store(server.data_dir, server.config.store)
    try:
        box = store.mailbox(user, mailbox)
        assert box is not None, f"{user} has no {mailbox}"
        return {m.uid: (m.flags, store.read(user, box.id, m.uid)) for m in store.messages(user, box.id)}
    finally:
        store.close()


def uidvalidity(server: MaildServer, user: str) -> int:
    store = Store(server.data_dir, server.config.store)
    try:
        box = store.mailbox(user, "INBOX")
        assert box is not None
        return box.uidvalidity
    finally:
        store.close()


def tls_context(server: MaildServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.cafile))


def poplib_session(server: MaildServer, account: Account) -> poplib.POP3:
    """A logged-in poplib client on 110 after STLS."""
    client = poplib.POP3(server.host, server.ports["pop3"], timeout=30)
    client.stls(tls_context(server))
    client.user(account.address)
    client.pass_(account.password)
    return client


class Daemons:
    """One daemon per distinct ``MAILD_OVERRIDES`` for the whole session, each with its own
    pool of accounts: modules with the same configuration share a daemon."""

    def __init__(self, root: Path, tls_files: tuple[Path, Path, Path], hashes: dict[str, str]) -> None:
        self.root = root
        self.tls_files = tls_files
        self.hashes = hashes
        self.servers: dict[str, tuple[MaildServer, Iterator[Account]]] = {}

    def get(self, overrides: dict[str, dict[str, object]]) -> tuple[MaildServer, Iterator[Account]]:
        key = repr(sorted(overrides.items()))
        if key not in self.servers:
            root = self.root / f"maild{len(self.servers)}"
            root.mkdir()
            accounts = (Account(f"pop{n}@example.test", POOL_PASSWORD) for n in range(POOL_SIZE))
            self.servers[key] = (MaildServer(root, self.tls_files, self.hashes, overrides), accounts)
        return self.servers[key]

    def close(self) -> list[str]:
        problems = []
        for server, _ in self.servers.values():
            code = server.stop()
            if code not in (0, -signal.SIGKILL):
                problems.append(f"maild exited with {code}:\n{server.log()[-4000:]}")
            result = server.fsck()
            if result.returncode != 0:
                problems.append(f"maild fsck found problems:\n{result.stdout}{result.stderr}")
        return problems


@pytest.fixture(scope="session")
def pop3_daemons(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path, Path],
                 password_hashes: dict[str, str]) -> Iterator[Daemons]:
    pool_hash = hash_password(POOL_PASSWORD)
    hashes = {**password_hashes, **{f"pop{n}@example.test": pool_hash for n in range(POOL_SIZE)}}
    daemons = Daemons(tmp_path_factory.mktemp("pop3"), tls_files, hashes)
    yield daemons
    problems = daemons.close()
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, pop3_daemons: Daemons) -> MaildServer:
    return pop3_daemons.get(getattr(request.module, "MAILD_OVERRIDES", {}))[0]


@pytest.fixture
def account(request: pytest.FixtureRequest, pop3_daemons: Daemons, server: MaildServer) -> Account:
    """A mailbox no other test has touched."""
    accounts = pop3_daemons.get(getattr(request.module, "MAILD_OVERRIDES", {}))[1]
    found = next(accounts, None)
    assert found is not None, "raise POOL_SIZE"
    return found


@pytest.fixture
def pop(server: MaildServer) -> Iterator[Pop3Transcript]:
    """A session on 110 after STLS, not yet logged in."""
    t = Pop3Transcript(server.host, server.ports["pop3"], cafile=server.cafile)
    t.greeting()
    t.stls()
    yield t
    t.close()


@pytest.fixture
def plain_pop(server: MaildServer) -> Iterator[Pop3Transcript]:
    """A session on 110 without TLS."""
    t = Pop3Transcript(server.host, server.ports["pop3"], cafile=server.cafile)
    t.greeting()
    yield t
    t.close()


class FileMda:
    """An external MDA for a mail fetcher under test: a script that writes each message it
    is given to its own file in ``home/out`` (Maildir delivery is refused as root)."""

    def __init__(self, home: Path) -> None:
        self.out = home / "out"
        self.out.mkdir(parents=True, exist_ok=True)
        self.script = home / "mda.sh"
        self.script.write_text(f'#!/bin/sh\nexec cat > "$(mktemp -p {self.out} msg.XXXXXX)"\n')
        self.script.chmod(0o755)
        self._seen = set(self.out.iterdir())

    def new_messages(self) -> list[bytes]:
        """The messages delivered since the last call (or since creation)."""
        now = set(self.out.iterdir())
        new, self._seen = sorted(now - self._seen), now
        return [p.read_bytes() for p in new]

