"""Before authentication a line or literal is bounded by what a login needs (8 KiB,
issue 15 item 4): an attacker without an account cannot make the server hold a 1 MB
literal per connection. After LOGIN the [imap] limits apply."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from tests.conftest import MaildServer
from tests.imap.conftest import Account, Transcript, message, tls_context
from tests.reliability.conftest import rss_kb

PRE_AUTH_LIMIT = 8 * 1024


def test_big_login_literal_is_refused_before_reading(connect: Callable[..., Transcript], account: Account) -> None:
    s = connect(login=False)
    s.send("a LOGIN {1000000}")  # the attack: 1 MB announced in LOGIN
    assert s.line() == b"a BAD literal too large"  # no "+" continuation: nothing is read
    s.send(f"b LOGIN {{{PRE_AUTH_LIMIT + 1}}}")
    assert s.line() == b"b BAD literal too large"
    s.send(b"c NOOP " + b"x" * (PRE_AUTH_LIMIT + 10))
    assert s.line() == b"c BAD line too long"
    # What a login needs still fits: a literal user name and a long password.
    user = account.address.encode()
    s.send(b"d LOGIN {%d}" % len(user))
    assert s.line().startswith(b"+")
    s.send(user + b' "' + account.password.encode() + b'"')
    assert s.line().startswith(b"d OK")
    # Logged in: the [imap] limits (max_line_length 64 KiB, APPENDLIMIT) apply.
    raw = message(body="y" * 100_000)
    s.send(b"e APPEND INBOX {%d}" % len(raw))
    assert s.line().startswith(b"+")
    s.send(raw)
    assert s.line().startswith(b"e OK")


def test_non_synchronizing_pre_auth_literal_over_the_limit_ends_the_session(
        connect: Callable[..., Transcript]) -> None:
    s = connect(login=False)
    s.send("a LOGIN {1000000+}")  # RFC 7888 §4: the client sends it anyway, so the session ends
    assert s.line() == b"a BAD literal too large"
    assert s.line().startswith(b"* BYE")
    assert s.closed()


def test_fifty_pre_auth_sessions_cannot_park_a_megabyte_each(imap_server: MaildServer) -> None:
    before = rss_kb(imap_server)
    socks = []
    for _ in range(40):
        raw = socket.create_connection((imap_server.host, imap_server.ports["imaps"]), 10)
        sock = tls_context(imap_server.cafile).wrap_socket(raw, server_hostname="localhost")
        socks.append(sock)
        sock.recv(4096)  # greeting
        try:
            sock.sendall(b"a LOGIN {1000000+}\r\n" + b"x" * 1_000_000)
        except (ssl.SSLError, OSError):
            pass  # the server has already said BYE and closed
    growth = rss_kb(imap_server) - before
    for sock in socks:
        sock.close()
    assert growth < 16 * 1024, growth  # kB; 40 MB were sent
