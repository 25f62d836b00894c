"""IMAP test helpers: a raw-socket transcript client and connected fixtures.

``s.ok("UID MOVE 1:* Trash")`` sends one tagged command and returns its untagged lines,
failing unless the tagged answer is OK; ``s.no(..., code="TRYCREATE")`` and ``s.bad(...)``
expect NO and BAD. Literals in responses are read and inlined, so each returned line is
one whole response.
"""

from __future__ import annotations

import imaplib
import itertools
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from maild.auth import hash_password
from tests.conftest import MaildServer

TIMEOUT = 10.0


def tls_context(cafile: Any) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = False  # the test certificate is for "localhost"
    return context


class Transcript:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(TIMEOUT)
        self.buffer = b""
        self.counter = 0
        self.greeting = self.line()

    # -- raw I/O --------------------------------------------------------------------------

    def send(self, data: bytes | str) -> None:
        """Send one line (CRLF appended)."""
        raw = data.encode() if isinstance(data, str) else data
        self.sock.sendall(raw + b"\r\n")

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"connection closed; buffered {self.buffer!r}")
        self.buffer += chunk

    def raw_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def line(self) -> bytes:
        """One response with literals inlined (``{n}\\r\\n`` kept, data follows)."""
        out = self.raw_line()
        while True:
            match = re.search(rb"\{(\d+)\}$", out)
            if match is None:
                return out
            size = int(match.group(1))
            while len(self.buffer) < size:
                self._fill()
            out += b"\r\n" + self.buffer[:size]
            self.buffer = self.buffer[size:]
            out += self.raw_line()

    def closed(self) -> bool:
        try:
            self.sock.settimeout(2)
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    # -- commands ---------------------------------------------------------------------------

    def tag(self) -> str:
        self.counter += 1
        return f"t{self.counter}"

    def command(self, text: str | bytes) -> tuple[list[bytes], bytes]:
        tag = self.tag()
        raw = text.encode() if isinstance(text, str) else text
        self.send(tag.encode() + b" " + raw)
        return self.collect(tag)

    def collect(self, tag: str) -> tuple[list[bytes], bytes]:
        untagged = []
        while True:
            line = self.line()
            if line.startswith(tag.encode() + b" "):
                return untagged, line[len(tag) + 1:]
            untagged.append(line)

    def expect(self, status: str, text: str | bytes, code: str | None) -> list[bytes]:
        untagged, result = self.command(text)
        assert result.startswith(status.encode() + b" "), (text, result, untagged)
        if code is not None:
            assert result.startswith(f"{status} [{code}".encode()), (text, result)
        return untagged

    def ok(self, text: str | bytes, code: str | None = None) -> list[bytes]:
        return self.expect("OK", text, code)

    def no(self, text: str | bytes, code: str | None = None) -> list[bytes]:
        return self.expect("NO", text, code)

    def bad(self, text: str | bytes) -> list[bytes]:
        return self.expect("BAD", text, None)

    def login(self, user: str, password: str) -> None:
        self.ok(f'LOGIN {user} "{password}"')

    def close(self) -> None:
        self.sock.close()


def untagged_with(lines: list[bytes], word: bytes) -> list[bytes]:
    return [line for line in lines if word in line]


def message(subject: str = "hello", body: str = "Hello, world.", sender: str = "bob@example.test",
            to: str = "alice@example.test", extra: str = "") -> bytes:
    return (f"From: Bob <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <{abs(hash(subject + body))}@example.test>\r\n"
            f"{extra}\r\n{body}\r\n").encode()


def append(s: Transcript, mailbox: str, raw: bytes, flags: str = "") -> int:
    """APPEND with a non-synchronizing literal; the new UID."""
    flag_part = f"({flags}) " if flags else ""
    lines, result = s.command(f"APPEND {mailbox} {flag_part}{{{len(raw)}+}}\r\n".encode() + raw)
    assert result.startswith(b"OK [APPENDUID "), result
    return int(result.split(b"]")[0].split()[-1])


PASSWORD = "imap-test-secret"
USERS = 160  # one fresh user per test: tests share one daemon but never a mailbox


@dataclass(frozen=True)
class Account:
    address: str
    password: str


@pytest.fixture(scope="package")
def imap_server(tls_files: tuple[Path, Path, Path], password_hashes: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaildServer]:
    """One `maild serve` for the IMAP tests (starting one per test would dominate their
    time), with alice, bob and USERS fresh users; fsck-checked at the end like maild_server."""
    shared = hash_password(PASSWORD)
    hashes = {**password_hashes, **{f"user{i}@example.test": shared for i in range(USERS)}}
    server = MaildServer(tmp_path_factory.mktemp("imap"), tls_files, hashes, {})
    yield server
    code = server.stop()
    result = server.fsck()
    if code != 0 or result.returncode != 0:
        pytest.fail(f"maild exited with {code}; fsck: {result.stdout}{result.stderr}\n{server.log()[-4000:]}")


_next_user = itertools.count()


def fresh_account() -> Account:
    """A user nobody else in the test run touches (empty mailboxes)."""
    n = next(_next_user)
    assert n < USERS, "raise USERS in tests/imap/conftest.py"
    return Account(f"user{n}@example.test", PASSWORD)


@pytest.fixture
def account() -> Account:
    """This test's user (see fresh_account)."""
    return fresh_account()


@pytest.fixture
def connect(imap_server: MaildServer, account: Account) -> Iterator[Callable[..., Transcript]]:
    """connect(tls="implicit"|"starttls"|"none", login=True, user=this test's account)."""
    opened: list[Transcript] = []

    def make(tls: str = "implicit", login: bool = True, user: str = account.address,
             password: str = account.password) -> Transcript:
        if tls == "implicit":
            raw = socket.create_connection((imap_server.host, imap_server.ports["imaps"]), TIMEOUT)
            sock = tls_context(imap_server.cafile).wrap_socket(raw, server_hostname="localhost")
            s = Transcript(sock)
        else:
            s = Transcript(socket.create_connection((imap_server.host, imap_server.ports["imap"]), TIMEOUT))
            if tls == "starttls":
                s.ok("STARTTLS")
                s.sock = tls_context(imap_server.cafile).wrap_socket(s.sock, server_hostname="localhost")
        opened.append(s)
        if login:
            s.login(user, password)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def imap(connect: Callable[..., Transcript]) -> Transcript:
    """This test's user, logged in over implicit TLS."""
    return connect()


@pytest.fixture
def imaplib_client(imap_server: MaildServer, account: Account) -> Iterator[imaplib.IMAP4_SSL]:
    client = imaplib.IMAP4_SSL(imap_server.host, imap_server.ports["imaps"],
                               ssl_context=tls_context(imap_server.cafile), timeout=TIMEOUT)
    client.login(account.address, account.password)
    yield client
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass
