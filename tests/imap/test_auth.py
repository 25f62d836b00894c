"""Authentication: STARTTLS, LOGIN, AUTHENTICATE PLAIN/LOGIN, LOGINDISABLED (RFC 3501 §6.2)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from typing import Any

from tests.imap.conftest import Transcript, tls_context


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def test_no_login_before_tls(connect: Callable[..., Transcript], imap_server: Any) -> None:
    s = connect(tls="none", login=False)
    assert b"LOGINDISABLED" in s.greeting and b"STARTTLS" in s.greeting
    assert b"AUTH=PLAIN" not in s.greeting
    s.no('LOGIN alice@example.test "alice-secret"', code="PRIVACYREQUIRED")
    s.no("AUTHENTICATE PLAIN " + plain("alice@example.test", "alice-secret"), code="PRIVACYREQUIRED")
    s.bad("SELECT INBOX")  # not allowed in the not-authenticated state
    s.ok("STARTTLS")
    s.sock = tls_context(imap_server.cafile).wrap_socket(s.sock, server_hostname="localhost")
    caps = s.ok("CAPABILITY")[0]
    assert b"AUTH=PLAIN" in caps and b"STARTTLS" not in caps and b"LOGINDISABLED" not in caps
    s.bad("STARTTLS")
    s.login("alice@example.test", "alice-secret")
    s.ok("SELECT INBOX")


def test_starttls_discards_pipelined_commands(imap_server: Any) -> None:
    sock = socket.create_connection((imap_server.host, imap_server.ports["imap"]), 10)
    s = Transcript(sock)
    # CVE-2011-0411 class: a command injected behind STARTTLS must not run after the handshake.
    s.send(b"a STARTTLS\r\nb LOGIN alice@example.test alice-secret\r\nc CREATE Injected")
    assert s.line() == b"a OK Begin TLS negotiation now"
    s.sock = tls_context(imap_server.cafile).wrap_socket(sock, server_hostname="localhost")
    s.buffer = b""
    s.ok("NOOP")
    s.bad("LIST \"\" *")  # still not authenticated
    s.login("alice@example.test", "alice-secret")
    assert s.ok('LIST "" Injected') == []


def test_authenticate_plain_and_login(connect: Callable[..., Transcript]) -> None:
    s = connect(login=False)
    s.send("a AUTHENTICATE PLAIN")
    assert s.line() == b"+ "
    s.send(plain("alice@example.test", "wrong"))
    assert s.line().startswith(b"a NO [AUTHENTICATIONFAILED]")
    s.send("b AUTHENTICATE PLAIN")
    assert s.line() == b"+ "
    s.send("*")
    assert s.line().startswith(b"b BAD")
    s.no("AUTHENTICATE PLAIN " + plain("alice@example.test", "alice-secret", "bob@example.test"),
         code="AUTHORIZATIONFAILED")
    s.no("AUTHENTICATE CRAM-MD5", code="CANNOT")
    untagged, result = s.command("AUTHENTICATE PLAIN " + plain("alice@example.test", "alice-secret"))
    assert result.startswith(b"OK [CAPABILITY IMAP4rev1") and b"UIDPLUS" in result
    s.bad("LOGIN alice@example.test alice-secret")  # already authenticated

    t = connect(login=False)
    t.send("a AUTHENTICATE LOGIN")
    assert t.line() == b"+ VXNlcm5hbWU6"
    t.send(base64.b64encode(b"bob@example.test").decode())
    assert t.line() == b"+ UGFzc3dvcmQ6"
    t.send(base64.b64encode(b"bob-secret").decode())
    assert t.line().startswith(b"a OK")


def test_wrong_passwords_and_unknown_users(connect: Callable[..., Transcript]) -> None:
    s = connect(login=False)
    s.no('LOGIN alice@example.test "nope"', code="AUTHENTICATIONFAILED")
    s.no('LOGIN nobody@example.test "nope"', code="AUTHENTICATIONFAILED")
    s.login("Alice@Example.TEST", "alice-secret")  # the login name is case-insensitive


def test_plaintext_on_loopback_when_configured(maild_factory: Callable[..., Any]) -> None:
    server = maild_factory(imap={"allow_plaintext_auth_on_loopback": True})
    s = Transcript(socket.create_connection((server.host, server.ports["imap"]), 10))
    assert b"AUTH=PLAIN" in s.greeting and b"LOGINDISABLED" not in s.greeting
    s.login("alice@example.test", "alice-secret")
    s.ok("LOGOUT")
    s.close()
